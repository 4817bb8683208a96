"""From records to numbers: per-target summaries, the table, the markdown report, the chart.

Accuracy is the share of items answered correctly (a request that failed counts as wrong);
``overall`` is over all items, so kinds weigh by their item counts. Latencies are the client's
wall times; p50/p95 interpolate linearly between the nearest ranks.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evals.items import KINDS, Kind
from evals.runner import Record

if TYPE_CHECKING:
    from matplotlib.axes import Axes

CHART_NAME = "accuracy_vs_latency.png"
_LABEL_OFFSETS = ((6, 4), (6, -12), (6, 16), (6, -24))


@dataclass(frozen=True, slots=True)
class Summary:
    """One target's results."""

    target: str
    items: int
    errors: int
    correct_by_kind: dict[Kind, tuple[int, int]]  # kind -> (correct, asked)
    p50: float
    p95: float
    node_seconds: float

    @property
    def accuracy(self) -> float:
        correct = sum(c for c, _ in self.correct_by_kind.values())
        return correct / self.items if self.items else 0.0

    def kind_accuracy(self, kind: Kind) -> float | None:
        correct, asked = self.correct_by_kind.get(kind, (0, 0))
        return correct / asked if asked else None


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100), linear between closest ranks; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(records: Sequence[Record]) -> list[Summary]:
    """One summary per target, in the order targets first appear."""
    targets = list(dict.fromkeys(r.target for r in records))
    return [_summary(t, [r for r in records if r.target == t]) for t in targets]


def _summary(target: str, records: list[Record]) -> Summary:
    by_kind: dict[Kind, tuple[int, int]] = {}
    for record in records:
        correct, asked = by_kind.get(record.kind, (0, 0))
        by_kind[record.kind] = (correct + record.correct, asked + 1)
    latencies = [r.latency for r in records]
    return Summary(
        target=target,
        items=len(records),
        errors=sum(r.error is not None for r in records),
        correct_by_kind=by_kind,
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        node_seconds=sum(r.node_seconds for r in records),
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def table(summaries: Sequence[Summary]) -> str:
    """A markdown table: accuracy per kind and overall, latency, node-seconds, errors."""
    kinds = [k for k in KINDS if any(k in s.correct_by_kind for s in summaries)]
    head = ["target", *kinds, "overall", "p50 s", "p95 s", "node-s", "items", "errors"]
    rows = [head, ["---"] * len(head)]
    for s in summaries:
        rows.append(
            [
                f"`{s.target}`",
                *(_pct(s.kind_accuracy(k)) for k in kinds),
                f"**{_pct(s.accuracy)}**",
                f"{s.p50:.2f}",
                f"{s.p95:.2f}",
                f"{s.node_seconds:.1f}",
                str(s.items),
                str(s.errors),
            ]
        )
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def machine() -> str:
    """One line describing this machine: CPU model and count, memory, OS, Python."""
    cpu = _proc_field("/proc/cpuinfo", "model name") or platform.processor() or "unknown CPU"
    kib = _proc_field("/proc/meminfo", "MemTotal")
    memory = f", {int(kib.split()[0]) / 2**20:.0f} GiB RAM" if kib else ""
    return (
        f"{os.cpu_count()} x {cpu}{memory}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def _proc_field(path: str, name: str) -> str | None:
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def markdown(summaries: Sequence[Summary], settings: Mapping[str, str], date: str) -> str:
    """The report: when, where, with what settings, the table and the chart."""
    lines = [
        "# booagent eval",
        "",
        f"- date: {date}",
        f"- machine: {machine()}",
        *(f"- {name}: {value}" for name, value in settings.items()),
        "",
        table(summaries),
        "",
        "Accuracy is the share of items answered correctly (failed requests count as wrong).",
        "Latency is the client's wall time per request; node-s sums the member calls' times",
        "from the `booagent` metadata when present, else the request's own time.",
        "",
        f"![accuracy vs p95 latency]({CHART_NAME})",
        "",
    ]
    return "\n".join(lines)


@contextmanager
def drawing(path: Path, size: tuple[float, float]) -> Iterator[Axes]:
    """Axes to draw on; the figure is saved to ``path`` as a PNG when the block ends."""
    import matplotlib  # the optional `eval` extra, loaded only to draw

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=size, dpi=120)
    try:
        yield axes
        figure.tight_layout()
        figure.savefig(path)
    finally:
        pyplot.close(figure)


def chart(summaries: Sequence[Summary], path: Path) -> None:
    """Accuracy against p95 latency, one labelled point per target, as a PNG."""
    with drawing(path, (7, 4.5)) as axes:
        for index, s in enumerate(summaries):
            axes.scatter(s.p95, 100 * s.accuracy, s=50)
            offset = _LABEL_OFFSETS[index % len(_LABEL_OFFSETS)]  # coinciding points stay legible
            axes.annotate(
                s.target, (s.p95, 100 * s.accuracy), xytext=offset, textcoords="offset points"
            )
        axes.set_xlabel("p95 latency (s)")
        axes.set_ylabel("accuracy (%)")
        axes.set_ylim(0, 100)
        axes.set_xlim(left=0, right=max([s.p95 for s in summaries] + [1.0]) * 1.35)
        axes.grid(alpha=0.3)
        axes.set_title("booagent eval: accuracy vs p95 latency")


def write(
    summaries: Sequence[Summary], settings: Mapping[str, str], date: str, out: Path
) -> tuple[Path, Path]:
    """Write ``report.md`` and the chart into ``out``; returns both paths."""
    out.mkdir(parents=True, exist_ok=True)
    report, png = out / "report.md", out / CHART_NAME
    chart(summaries, png)
    report.write_text(markdown(summaries, settings, date))
    return report, png
