"""What `booagent eval` does, behind its thin click wrapper in ``gateway/cli.py``.

Pick the targets from the gateway's ``/v1/models``, pick the items, run them (cache first),
print the table and write the report and chart. Targets are model ids: the first listed id is
the virtual model (``booagent-cluster``), ids ``<virtual>:<name>`` are its strategies, and
the rest are members.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evals import report
from evals.cache import DEFAULT_CACHE, Cache, CacheError
from evals.client import Asker, AskError, Sampling
from evals.items import KINDS, Item, Kind, Split, load_suite, select
from evals.runner import Record, run_async

Echo = Callable[[str], None]


class EvalError(Exception):
    """A usage problem worth one line to the user (unknown target, kind or split)."""


@dataclass(frozen=True, slots=True)
class EvalOptions:
    """The command line, parsed. Name lists may hold comma-separated values."""

    against: str
    strategies: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    split: str = "test"
    kinds: tuple[str, ...] = ()
    limit: int | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    seed: int = 1234
    concurrency: int = 1
    out: Path = Path("docs/eval")
    cache: Path = DEFAULT_CACHE
    api_key: str = "unused"
    quiet: bool = False


def _names(values: Sequence[str]) -> list[str]:
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def resolve_targets(
    listed: Sequence[str], strategies: Sequence[str], members: Sequence[str]
) -> list[str]:
    """The model ids to evaluate; every one listed when neither strategies nor members are given.

    A strategy may be named in full (``booagent-cluster:cascade``), by its suffix (``cascade``),
    or as ``auto`` for the virtual model itself; ``all`` picks every strategy or every member.
    """
    if not listed:
        raise EvalError("the gateway lists no models")
    virtual = listed[0]
    strategy_ids = [m for m in listed if m == virtual or m.startswith(f"{virtual}:")]
    member_ids = [m for m in listed if m not in strategy_ids]
    if not strategies and not members:
        return list(listed)
    chosen = [_strategy(name, virtual, strategy_ids) for name in strategies]
    for name in members:
        if name == "all":
            chosen += member_ids
        elif name in member_ids:
            chosen.append(name)
        else:
            raise EvalError(f"unknown member {name!r}; the gateway lists {', '.join(member_ids)}")
    return list(dict.fromkeys(c for group in chosen for c in _flat(group)))


def _flat(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]


def _strategy(name: str, virtual: str, strategy_ids: list[str]) -> str | list[str]:
    if name == "all":
        return strategy_ids
    for candidate in (name, f"{virtual}:{name}"):
        if candidate in strategy_ids:
            return candidate
    if name in ("auto", "default"):
        return virtual
    known = ", ".join(strategy_ids)
    raise EvalError(f"unknown strategy {name!r}; the gateway lists {known}")


def parse_split(value: str) -> Split | None:
    """``dev``, ``test`` or ``all`` (None: every item)."""
    if value == "all":
        return None
    if value in ("dev", "test"):
        return "dev" if value == "dev" else "test"
    raise EvalError(f"unknown split {value!r}; use dev, test or all")


def parse_kinds(values: Sequence[str]) -> list[Kind]:
    """The kinds named (comma-separated values allowed); an unknown one is an error."""
    kinds: list[Kind] = []
    for name in _names(values):
        kind = next((k for k in KINDS if k == name), None)
        if kind is None:
            raise EvalError(f"unknown kind {name!r}; use {', '.join(KINDS)}")
        kinds.append(kind)
    return kinds


def items_for(options: EvalOptions) -> list[Item]:
    """The suite's items this run covers."""
    split, kinds = parse_split(options.split), parse_kinds(options.kinds)
    return select(load_suite(), split=split, kinds=kinds, limit=options.limit)


def _progress(echo: Echo) -> Callable[[Record, int, int], None]:
    def show(record: Record, done: int, total: int) -> None:
        mark = "ok " if record.correct else ("ERR" if record.error else "-- ")
        source = "cache" if record.cached else f"{record.latency:5.1f}s"
        echo(f"[{done}/{total}] {mark} {record.target:<28} {record.item_id:<11} {source}")

    return show


def settings_lines(
    options: EvalOptions, items: Sequence[Item], targets: Sequence[str]
) -> dict[str, str]:
    """The settings the report states, as display strings."""
    return {
        "gateway": options.against,
        "targets": ", ".join(f"`{t}`" for t in targets),
        "split": options.split,
        "kinds": ", ".join(parse_kinds(options.kinds)) or "all",
        "items": f"{len(items)} per target"
        + (f" (at most {options.limit} per kind)" if options.limit else ""),
        "sampling": f"max_tokens {options.max_tokens or 'none'}, "
        f"temperature {options.temperature:g}, seed {options.seed}",
        "concurrency": str(options.concurrency),
    }


async def _evaluate(options: EvalOptions, echo: Echo) -> list[Record]:
    items = items_for(options)
    if not items:
        raise EvalError("no items match the split, kinds and limit given")
    sampling = Sampling(options.max_tokens, options.temperature, options.seed)
    async with Asker(options.against, api_key=options.api_key) as asker:
        try:
            listed = await asker.models()
        except AskError as exc:
            raise EvalError(exc.message) from exc
        targets = resolve_targets(listed, _names(options.strategies), _names(options.members))
        echo(f"evaluating {len(items)} items on {', '.join(targets)}")
        try:
            cache = Cache(options.cache)
        except CacheError as exc:
            raise EvalError(str(exc)) from exc
        with cache:
            return await run_async(
                asker,
                targets,
                items,
                cache,
                sampling=sampling,
                concurrency=options.concurrency,
                on_record=None if options.quiet else _progress(echo),
            )


def evaluate(options: EvalOptions, echo: Echo = print) -> list[Record]:
    """Run the evaluation, print the table, write the report and chart; returns the records."""
    started = datetime.datetime.now(datetime.UTC)
    records = asyncio.run(_evaluate(options, echo))
    elapsed = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
    summaries = report.summarise(records)
    targets = [s.target for s in summaries]
    settings = settings_lines(options, items_for(options), targets)
    settings["wall time"] = f"{elapsed:.0f} s ({sum(r.cached for r in records)} answers cached)"
    date = started.strftime("%Y-%m-%d %H:%M UTC")
    paths = report.write(summaries, settings, date, options.out)
    echo("")
    echo(report.table(summaries))
    echo("")
    echo(f"report: {paths[0]}\nchart:  {paths[1]}")
    return records
