"""The soak benchmark's report, as markdown: printed, and written to ``docs/soak.md``."""

from __future__ import annotations

from pathlib import Path

from bench.chaos_report import chaos_markdown
from bench.soak import SoakReport

_FIGURES = (
    ("rss_kib", "gateway resident memory", 1 / 1024, "MiB"),
    ("fds", "open file descriptors", 1.0, ""),
    ("tasks", "event-loop tasks", 1.0, ""),
)


def soak_markdown(report: SoakReport) -> str:
    settings = report.settings
    hours = settings.chaos.duration / 3600
    lines = [
        f"## Soak: {hours:g} h of mixed load with node kills",
        "",
        f"`booagent bench soak --hours {hours:g} --sample-every {settings.sample_every:g}`; "
        f"slopes by least squares over the run after the first {settings.warmup / 60:g} "
        "minutes; '24 h' is the last value plus the slope times the hours left to 24.",
        "",
        "| figure | first | last | min | max | slope per hour | at 24 h |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(report, *figure) for figure in _FIGURES]
    lines += _latency(report)
    load = chaos_markdown(report.chaos).replace(
        "# Chaos benchmark", "### The load and what it got (the chaos benchmark's report)", 1
    )
    lines += ["", _timeline(report), "", load]
    return "\n".join(lines) + "\n"


def _row(report: SoakReport, name: str, label: str, scale: float, unit: str) -> str:
    points = [(t, v * scale) for t, v in report.series(name)]
    if not points:
        return f"| {label} | - | - | - | - | - | - |"
    values = [v for _, v in points]
    slope = report.slope(points)
    left = 24 - points[-1][0]
    at_24 = "-" if slope is None else f"{values[-1] + slope * left:.1f} {unit}"
    shown = "-" if slope is None else f"{slope:+.2f} {unit}"
    return (
        f"| {label} | {values[0]:.1f} {unit} | {values[-1]:.1f} {unit} | {min(values):.1f} | "
        f"{max(values):.1f} | {shown} | {at_24} |"
    )


def _latency(report: SoakReport) -> list[str]:
    rows = report.latency()
    if not rows:
        return []
    p50 = report.slope([(t, a) for t, a, _, _ in rows])
    p95 = report.slope([(t, b) for t, _, b, _ in rows])
    first, last = rows[0], rows[-1]
    return [
        f"| request time p50 (per interval) | {first[1]:.2f} s | {last[1]:.2f} s | "
        f"{min(r[1] for r in rows):.2f} | {max(r[1] for r in rows):.2f} | "
        f"{'-' if p50 is None else f'{p50:+.3f} s'} | |",
        f"| request time p95 (per interval) | {first[2]:.2f} s | {last[2]:.2f} s | "
        f"{min(r[2] for r in rows):.2f} | {max(r[2] for r in rows):.2f} | "
        f"{'-' if p95 is None else f'{p95:+.3f} s'} | |",
    ]


def _timeline(report: SoakReport) -> str:
    """The figures every tenth of the run."""
    samples = report.samples
    step = max(1, len(samples) // 10)
    lines = ["| hours | RSS MiB | fds | tasks |", "|---|---|---|---|"]
    for at, s in samples[::step]:
        lines.append(
            f"| {(at - report.start) / 3600:.2f} | {s.rss_kib / 1024:.1f} | {s.fds} | {s.tasks} |"
        )
    return "\n".join(lines)


def write_soak(path: Path, markdown: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Soak runs\n\n" + markdown)
