"""How good are the checks the ``tested`` strategy runs? Measured on the code items.

The strategy judges answers by checks it finds in the request (:func:`ensemble.code_checks.stated`)
or asks a member to write (:func:`ensemble.code_checks.test_request`). A wrong check costs a
right answer, so both sources are measured against each item's reference solution and a stub
(:mod:`evals.references`), with the strategy's own runner (:mod:`ensemble.code_run`): a check is
*sound* when the reference passes it and *telling* when the stub fails it.

    python -m evals.checks_quality --split dev                       # stated examples only
    python -m evals.checks_quality --split dev --against URL --writer qwen2.5-coder-0.5b

Written checks need a running gateway (the writer is asked as a member model, temperature 0).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import openai

from ensemble.code_checks import defined_names, stated, test_request, written_tests
from ensemble.code_run import Check, run_checks
from ensemble.sandbox import Limits
from evals.client import api_base
from evals.items import SPLITS, Item, Split, load_suite, select
from evals.references import load_references, stub_of

_LIMITS = Limits(cpu_seconds=2, wall_seconds=10.0)
_SHOWN = 12


@dataclass(frozen=True, slots=True)
class Judged:
    """One item's checks from one source, and how many were sound and telling."""

    item: str
    checks: int
    sound: int
    telling: int
    unsound: tuple[str, ...] = ()
    faultless: int = 0
    """Checks the reference runs through without a fault (a differing value is none for a
    written assertion: :meth:`ensemble.code_run.Trial.faults`)."""


@dataclass
class Quality:
    """Every item's judged checks from one source (``stated`` or ``written``)."""

    source: str
    judged: list[Judged] = field(default_factory=list)

    def row(self) -> str:
        items = len(self.judged)
        having = [j for j in self.judged if j.checks]
        checks = sum(j.checks for j in having)
        sound = sum(j.sound for j in having)
        telling = sum(j.telling for j in having)
        all_sound = sum(j.sound == j.checks for j in having)
        faultless = sum(j.faultless for j in having)
        all_faultless = sum(j.faultless == j.checks for j in having)
        return (
            f"| {self.source} | {items} | {len(having)} | {checks} | {_pct(sound, checks)} | "
            f"{_pct(all_sound, len(having))} | {_pct(telling, checks)} | "
            f"{_pct(faultless, checks)} | {_pct(all_faultless, len(having))} |"
        )


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


async def judge(item: str, checks: Sequence[Check], reference: str) -> Judged:
    """Run ``checks`` against the reference (sound) and its stub (telling)."""
    if not checks:
        return Judged(item, 0, 0, 0)
    right = await run_checks(reference, checks, _LIMITS)
    empty = await run_checks(stub_of(reference), checks, _LIMITS)
    unsound = tuple(r.shown()[:200] for r in right.results if not r.passed)
    telling = sum(not r.passed for r in empty.results)
    faultless = len(checks) - len(right.faults())
    return Judged(item, len(checks), right.passed(), telling, unsound, faultless)


def entry_of(item: Item, reference: str) -> str:
    """The function the writer is asked about, found as the strategy finds it."""
    named = stated(item.prompt).entries or defined_names(reference)
    return named[0] if named else ""


async def written(client: openai.AsyncOpenAI, writer: str, item: Item, entry: str) -> list[Check]:
    """The assertions ``writer`` writes for ``item``, read as the strategy reads them."""
    done = await client.chat.completions.create(
        model=writer,
        messages=[{"role": "user", "content": test_request(item.prompt, entry)}],
        max_tokens=256,
        temperature=0,
    )
    text = done.choices[0].message.content or "" if done.choices else ""
    return list(written_tests(text, (entry,)))


async def measure(items: Sequence[Item], against: str | None, writer: str | None) -> list[Quality]:
    references = load_references()
    found = [Quality("stated")]
    for item in items:
        given = stated(item.prompt).checks
        found[0].judged.append(await judge(item.id, given, references[item.id]))
    if against is None or writer is None:
        return found
    found.append(Quality(f"written by {writer}"))
    async with openai.AsyncOpenAI(base_url=api_base(against), api_key="unused") as client:
        for item in items:
            reference = references[item.id]
            checks = await written(client, writer, item, entry_of(item, reference))
            found[1].judged.append(await judge(item.id, checks, reference))
    return found


def markdown(qualities: Sequence[Quality], split: str) -> str:
    lines = [
        f"# Checks of the `tested` strategy, on the code items ({split} split)",
        "",
        "| source | items | with checks | checks | sound | items all sound | telling | "
        "no fault | items without a fault |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *(q.row() for q in qualities),
        "",
        "*Sound*: the item's reference solution passes the check. *Telling*: a stub with the "
        "reference's names that returns None fails it. *No fault*: the reference runs through "
        "the check without a fault as the strategy counts them (a stated example must pass; a "
        "written assertion only must not make the code raise, hang or fail to load, since its "
        "expected value is often wrong). A faulting check sends a right answer back for repair.",
    ]
    for quality in qualities:
        unsound = [(j.item, u) for j in quality.judged for u in j.unsound][:_SHOWN]
        if unsound:
            lines += ["", f"Unsound checks, {quality.source} (first {_SHOWN}):", ""]
            lines += [f"- `{item}`: `{text}`" for item, text in unsound]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evals.checks_quality")
    parser.add_argument("--split", choices=[*SPLITS, "all"], default="dev")
    parser.add_argument("--against", help="Gateway URL, to ask --writer for assertions.")
    parser.add_argument("--writer", help="The member that writes assertions.")
    parser.add_argument("--out", type=Path, help="Write the markdown here as well.")
    args = parser.parse_args(argv)
    split: Split | None = None if args.split == "all" else args.split
    items = select(load_suite(), split=split, kinds=["code"])
    text = markdown(asyncio.run(measure(items, args.against, args.writer)), args.split)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
