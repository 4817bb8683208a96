"""Fit the strategies' settings on the dev split, from member answers (``booagent eval fit``).

For every dev item we have each member's greedy answer (the harness's cached runs) and one
extra sample of the members a cascade may stop at (another seed, temperature 0.8: exactly what
the cascade's agreement check asks for). From these, each strategy is replayed offline:

- ``cascade A>B``: accept A's answer when its signal passes (code parses; the prompt's
  checkable instructions hold; else A's two samples agree at least ``t``), else take B's.
- ``vote``: the ensemble's combination (majority vote / agreement) over several answers.

The report lists, per kind, accuracy and average node-seconds of each option, and the
agreement threshold that maximises dev accuracy; the chosen values go into the config.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import Chunk
from backends.collect import Accumulator
from ensemble.candidates import Candidate
from ensemble.cascade import agreement
from ensemble.checks import Checker
from ensemble.classify import Kind as RequestKind
from ensemble.vote import combine
from evals.client import Sampling
from evals.items import Item
from evals.runner import Record

SAMPLE = Sampling(temperature=0.8, seed=1235)
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True, slots=True)
class Option:
    """One way to answer a kind of item, replayed on the dev split."""

    kind: str
    name: str
    accuracy: float
    node_seconds: float
    items: int


Table = dict[tuple[str, str], Record]


def table(records: Iterable[Record]) -> Table:
    return {(r.target, r.item_id): r for r in records}


def _candidate(record: Record, sample: int = 0) -> Candidate:
    acc = Accumulator()
    acc.content.append(record.answer)
    for index, call in enumerate(record.tool_calls):
        function = {"name": call.name, "arguments": call.arguments}
        acc.tool_calls[index] = {"id": f"call_{index}", "type": "function", "function": function}
    return Candidate(record.target, sample, chunks=(Chunk({}),), acc=acc)


def cascade_accepts(item: Item, first: Record, second: Record | None, threshold: float) -> bool:
    """The cascade's verdict on the cheap member's answer (see ``ensemble.cascade``)."""
    found = Checker.of(body_of(item), request_kind(item)).verdict(_candidate(first))
    if found.checked:
        return found.passed
    if second is None:
        return False
    return agreement(_candidate(first), _candidate(second, 1)) >= threshold


def replay_cascade(
    items: Sequence[Item], greedy: Table, sampled: Table, ladder: tuple[str, str], threshold: float
) -> tuple[float, float]:
    """(accuracy, mean node-seconds) of a two-step cascade on ``items``."""
    cheap, strong = ladder
    correct, cost = 0, 0.0
    for item in items:
        first, second = greedy[(cheap, item.id)], sampled.get((cheap, item.id))
        cost += first.latency + (second.latency if second and item.kind != "code" else 0.0)
        if cascade_accepts(item, first, second, threshold):
            correct += first.correct
        else:
            final = greedy[(strong, item.id)]
            correct += final.correct
            cost += final.latency
    return correct / len(items), cost / len(items)


def _validity(item: Item) -> Callable[[Candidate], bool]:
    """The ensemble's checker for this item, as the gateway would run it."""
    return Checker.of(body_of(item), request_kind(item)).faultless


def body_of(item: Item) -> dict[str, Any]:
    """The chat request the harness sends for ``item``."""
    return item.body


def replay_vote(items: Sequence[Item], answers: Sequence[tuple[Table, str]]) -> tuple[float, float]:
    """(accuracy, mean node-seconds) of the ensemble's combination over ``answers``."""
    correct, cost = 0, 0.0
    for item in items:
        records = [t[(member, item.id)] for t, member in answers]
        candidates = [_candidate(r, i) for i, r in enumerate(records)]
        code = request_kind(item) is RequestKind.CODE
        preference = [m for _, m in answers]
        verdict = combine(candidates, preference, code=code, valid=_validity(item))
        correct += records[candidates.index(verdict.winner)].correct
        cost += sum(r.latency for r in records)
    return correct / len(items), cost / len(items)


def best_threshold(
    items: Sequence[Item], greedy: Table, sampled: Table, ladder: tuple[str, str]
) -> tuple[float, float, float]:
    """(threshold, accuracy, cost): highest accuracy, then lowest cost."""
    scored = [(t, *replay_cascade(items, greedy, sampled, ladder, t)) for t in THRESHOLDS]
    return max(scored, key=lambda s: (s[1], -s[2]))


def options_for(
    kind: str, items: Sequence[Item], greedy: Table, sampled: Table, members: Sequence[str]
) -> list[Option]:
    """Every option for one kind: each member alone, cascades, votes."""
    n = len(items)
    found = [Option(kind, f"route {m}", *_single(items, greedy, m), n) for m in members]
    for cheap in members[:-1]:
        ladder = (cheap, members[-1])
        t, acc, cost = best_threshold(items, greedy, sampled, ladder)
        found.append(Option(kind, f"cascade {cheap}>{members[-1]} t={t}", acc, cost, n))
    found.append(
        Option(kind, "vote all members", *replay_vote(items, [(greedy, m) for m in members]), n)
    )
    strong = members[-1]
    pair = [(greedy, strong), (greedy, members[-2])]
    found.append(Option(kind, f"vote {strong} + {members[-2]}", *replay_vote(items, pair), n))
    if all((strong, i.id) in sampled for i in items):
        pairs = [(greedy, strong), (greedy, members[-2]), (sampled, strong)]
        found.append(
            Option(kind, f"vote {strong} x2 + {members[-2]}", *replay_vote(items, pairs), n)
        )
    return found


def _single(items: Sequence[Item], greedy: Table, member: str) -> tuple[float, float]:
    records = [greedy[(member, i.id)] for i in items]
    return sum(r.correct for r in records) / len(records), sum(r.latency for r in records) / len(
        records
    )


def request_kind(item: Item) -> RequestKind:
    """How the gateway's classifier sees an eval item (for the `auto` table)."""
    from ensemble.classify import classify

    return classify(body_of(item))


MEMBERS = ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b")


def fit(url: str, members: Sequence[str] = MEMBERS, split: str = "dev") -> list[Option]:
    """Ask what is missing (members' greedy answers and one extra sample), then replay."""
    from evals.items import load_suite, select
    from evals.runner import run

    items = select(load_suite(), split=split)  # type: ignore[arg-type]
    greedy = table(run(url, members, items))
    non_code = [i for i in items if i.kind != "code"]
    sampled = table(run(url, members, non_code, sampling=SAMPLE))
    options: list[Option] = []
    for kind in sorted({i.kind for i in items}):
        of_kind = [i for i in items if i.kind == kind]
        options += options_for(kind, of_kind, greedy, sampled, members)
    return options


def main() -> None:
    import sys

    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8100"
    print(f"{'kind':8} {'option':45} {'accuracy':>8} {'node-s':>7} items")
    for option in fit(url):
        figures = f"{option.accuracy:8.0%} {option.node_seconds:7.2f} {option.items}"
        print(f"{option.kind:8} {option.name:45} {figures}")


if __name__ == "__main__":
    main()
