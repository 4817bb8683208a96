"""Accuracy against latency over several runs: one point per run, read from the runs' caches.

Each run of ``booagent eval`` under another configuration (a deadline, a writer order, a
prompt option) keeps its answers in its own cache; this reads them back, asks no model, and
writes the table and the chart that show what each choice costs and buys::

    python -m evals.curve --split dev --kinds code --max-tokens 0 --out docs/eval/code-curve \\
        --point "1.5B alone=/tmp/v1.sqlite3:qwen2.5-coder-1.5b" \\
        --point "tested, 10 s=/tmp/v1.sqlite3:booagent-cluster:tested"

A point is ``label=cache:target``; the first colon splits the cache path from the target.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from evals.client import Sampling
from evals.command import EvalError, parse_kinds, parse_split
from evals.items import Kind, Split, load_suite, select
from evals.report import Summary, drawing, summarise, table
from evals.runner import cached_records

CURVE_CHART = "curve.png"


@dataclass(frozen=True, slots=True)
class Point:
    """One run: what to call it, where its answers are, and which target answered."""

    label: str
    cache: Path
    target: str

    @classmethod
    def parse(cls, text: str) -> Point:
        label, sep, rest = text.partition("=")
        path, colon, target = rest.partition(":")
        if not sep or not colon or not label or not path or not target:
            raise ValueError(f"a point is label=cache:target, not {text!r}")
        return cls(label, Path(path).expanduser(), target)


def summaries(
    points: Sequence[Point], *, split: Split | None, kinds: Sequence[Kind], sampling: Sampling
) -> list[Summary]:
    """One summary per point, over the items its cache answered (a run cut short shows its
    item count in the table)."""
    items = select(load_suite(), split=split, kinds=kinds)
    found: list[Summary] = []
    for point in points:
        records = cached_records([point.target], items, cache_path=point.cache, sampling=sampling)
        if not records:
            raise SystemExit(f"{point.label}: no answer of {point.target} in {point.cache}")
        relabelled = [replace(r, target=point.label) for r in records]
        found += summarise(relabelled)
    return found


def chart(found: Sequence[Summary], path: Path) -> None:
    """Accuracy against p50 and p95 latency, one marker per run, named in a legend (runs
    close together stay legible), as a PNG."""
    with drawing(path, (8, 4.8)) as axes:
        for index, s in enumerate(found):
            color = f"C{index % 10}"
            accuracy = 100 * s.accuracy
            axes.plot([s.p50, s.p95], [accuracy, accuracy], color=color, alpha=0.4)
            axes.scatter([s.p50], [accuracy], color=color, marker="o", facecolors="none")
            axes.scatter([s.p95], [accuracy], color=color, marker="o", label=s.target)
        axes.set_xlabel("latency (s): hollow p50, filled p95")
        axes.set_ylabel("accuracy (%)")
        accuracies = [100 * s.accuracy for s in found]
        axes.set_ylim(max(0.0, min(accuracies) - 10), min(100.0, max(accuracies) + 10))
        axes.set_xlim(left=0, right=max([s.p95 for s in found] + [1.0]) * 1.1)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower left", fontsize="small")
        axes.set_title("accuracy against latency, one run per configuration")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--point", action="append", required=True, type=Point.parse)
    parser.add_argument("--split", default="dev", choices=["dev", "test", "all"])
    parser.add_argument("--kinds", default="code")
    parser.add_argument("--max-tokens", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        split, kinds = parse_split(args.split), parse_kinds([args.kinds])
    except EvalError as exc:
        parser.error(str(exc))
    found = summaries(
        args.point, split=split, kinds=kinds, sampling=Sampling(max_tokens=args.max_tokens)
    )
    args.out.mkdir(parents=True, exist_ok=True)
    chart(found, args.out / CURVE_CHART)
    print(table(found))
    print(f"\nchart: {args.out / CURVE_CHART}")


if __name__ == "__main__":
    main()
