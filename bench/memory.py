"""`booagent bench memory`: does the gateway's memory grow under a long run of requests?

Sends ``requests`` requests (alternately streaming and whole) through the gateway to the fast
upstream, reading the gateway's resident set size (``VmRSS``) every ``interval`` seconds. The
verdict compares the median RSS of the first and the last window of the run (60 s each, or a
third of the run when it is shorter than three minutes).
"""

from __future__ import annotations

import asyncio
import datetime
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import Phase, chat_request, close_connections, open_connections, run_phase
from bench.procs import Processes, memory_kib
from bench.report import Machine, machine, mib
from bench.stack import Stack, model_for, start_stack
from bench.stats import percentile

TITLE = "## Gateway memory"
TOKENS = 4
WINDOW = 60.0


@dataclass(frozen=True, slots=True)
class MemorySettings:
    requests: int = 100_000
    concurrency: int = 16
    interval: float = 1.0


@dataclass(frozen=True, slots=True)
class RssSample:
    seconds: float
    requests: int
    rss_kib: int


@dataclass(slots=True)
class MemoryReport:
    settings: MemorySettings
    machine: Machine
    started: datetime.datetime
    samples: list[RssSample] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    wall: float = 0.0
    peak_kib: int = 0
    pids: tuple[int, ...] = ()
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def window(self) -> float:
        return min(WINDOW, self.wall / 3) if self.wall else 0.0

    def _median(self, start: float, end: float) -> float:
        values = [s.rss_kib for s in self.samples if start <= s.seconds <= end]
        return percentile(values, 50)

    @property
    def first_kib(self) -> float:
        return self._median(0.0, self.window)

    @property
    def last_kib(self) -> float:
        return self._median(self.wall - self.window, self.wall)

    @property
    def growth(self) -> float:
        """Growth from the first window to the last, as a fraction of the first."""
        return (self.last_kib - self.first_kib) / self.first_kib if self.first_kib else 0.0


Progress = Callable[[str], None]


async def _sample(stack: Stack, report: MemoryReport, phase: Phase, progress: Progress) -> None:
    loop = asyncio.get_running_loop()
    started, next_note = loop.time(), 0
    while True:
        done = len(phase.samples) + phase.errors
        rss = memory_kib(stack.gateway.pid)["VmRSS"]
        report.samples.append(RssSample(loop.time() - started, done, rss))
        if done >= next_note:
            progress(f"{done:>8,} requests  {loop.time() - started:6.1f} s  RSS {mib(rss)}")
            next_note += max(1, report.settings.requests // 10)
        await asyncio.sleep(report.settings.interval)


async def _measure(stack: Stack, report: MemoryReport, progress: Progress) -> None:
    settings = report.settings
    target = stack.through
    asks = [
        chat_request(target, model_for(target), stream=stream, tokens=TOKENS)
        for stream in (False, True)
    ]
    connections = await open_connections(target, settings.concurrency)
    phase = Phase()
    sampler = asyncio.create_task(_sample(stack, report, phase, progress))
    try:
        await run_phase(connections, asks, settings.requests, phase)
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
        await close_connections(connections)
    report.samples.append(
        RssSample(phase.wall, settings.requests, memory_kib(stack.gateway.pid)["VmRSS"])
    )
    report.requests = len(phase.samples) + phase.errors
    report.errors = phase.errors + sum(
        1 for s in phase.samples if s.status != 200 or s.tokens != TOKENS
    )
    report.wall = phase.wall


def run_memory(settings: MemorySettings, progress: Progress | None = None) -> MemoryReport:
    """Start the upstream and the gateway, run the load while sampling RSS, stop both."""
    report = MemoryReport(settings, machine(), datetime.datetime.now().astimezone())
    with (
        tempfile.TemporaryDirectory(prefix="booagent-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        stack = start_stack(procs)
        report.pids = stack.pids
        asyncio.run(_measure(stack, report, progress or (lambda _: None)))
        report.peak_kib = memory_kib(stack.gateway.pid)["VmHWM"]
    report.load_after = os.getloadavg()
    return report


def _series(report: MemoryReport, points: int = 10) -> str:
    """About ``points`` samples, evenly spaced, and always the last one (once)."""
    samples = report.samples
    step = max(1, -(-len(samples) // points))
    chosen = samples[::step]
    if samples and chosen[-1] is not samples[-1]:
        chosen.append(samples[-1])
    return ", ".join(f"{s.requests:,}: {s.rss_kib / 1024:.1f}" for s in chosen)


def memory_markdown(report: MemoryReport) -> str:
    """The ``## Gateway memory`` section."""
    s = report.settings
    load = ", ".join(f"{v:.2f}" for v in report.load_after)
    rps = report.requests / report.wall if report.wall else 0.0
    window = report.window
    return "\n".join(
        [
            TITLE,
            "",
            f"Measured {report.started:%Y-%m-%d %H:%M %Z} with `booagent bench memory` on "
            f"{report.machine.describe()}; at the end {load}.",
            "",
            f"Settings: {s.requests:,} requests through the gateway to the fast upstream "
            f"(`bench/upstream.py`), alternately streaming and whole, {TOKENS}-token answers, "
            f"concurrency {s.concurrency}; gateway RSS (`VmRSS`) read every {s.interval:g} s.",
            "",
            f"- {report.requests:,} requests in {report.wall:.1f} s ({rps:,.0f} req/s), "
            f"{report.errors} errors.",
            f"- RSS, median of the first {window:.0f} s: {mib(int(report.first_kib))}; of the "
            f"last {window:.0f} s: {mib(int(report.last_kib))}; growth "
            f"**{report.growth:+.1%}** (target under 10%). Peak (`VmHWM`) {mib(report.peak_kib)}.",
            f"- RSS in MiB by requests served: {_series(report)}.",
            "",
        ]
    )
