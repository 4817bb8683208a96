"""`booagent bench soak --hours H`: the chaos load (:mod:`bench.chaos`: mixed requests, real
nodes SIGKILLed and restarted) for hours, watching the gateway process for growth.

Every ``sample_every`` seconds it records the gateway's resident memory (``VmRSS``), open file
descriptors (``/proc/PID/fd``) and the tasks alive on its event loop (``GET /metrics``,
``booagent_event_loop_tasks``), and the 50th and 95th percentile time of the requests that
ended in the interval. The report gives each series over time, its least-squares slope per
hour over the run after the first ``warmup`` (start-up allocations and caches filling are not
growth), and the value that slope would reach at 24 hours.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.chaos import ChaosReport, ChaosSettings, Echo, chaos_load
from bench.exchange import COMPLETE
from bench.live import LiveCluster, leftovers, live_cluster
from bench.procs import memory_kib
from bench.report import machine
from bench.sampling import Periodic


@dataclass(frozen=True, slots=True)
class SoakSettings:
    chaos: ChaosSettings
    sample_every: float = 60.0
    warmup: float = 600.0


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """The gateway process at one moment."""

    rss_kib: int
    fds: int
    tasks: int


@dataclass(slots=True)
class SoakReport:
    settings: SoakSettings
    chaos: ChaosReport
    samples: list[tuple[float, ProcessSample]] = field(default_factory=list)

    @property
    def start(self) -> float:
        return self.chaos.window[0]

    def series(self, name: str) -> list[tuple[float, float]]:
        """``(hours since the start, value)`` of one process figure."""
        return [(_hours(at - self.start), float(getattr(s, name))) for at, s in self.samples]

    def latency(self) -> list[tuple[float, float, float, int]]:
        """Per sample interval: (hours, p50, p95 of completed requests' time, their count)."""
        rows = []
        edges = [self.start, *(at for at, _ in self.samples)]
        done = [e for e in self.chaos.exchanges if e.outcome == COMPLETE]
        for low, high in itertools.pairwise(edges):
            times = sorted(e.ended - e.started for e in done if low < e.ended <= high)
            if times:
                at = _hours(high - self.start)
                rows.append((at, _pct(times, 50), _pct(times, 95), len(times)))
        return rows

    def slope(self, points: Sequence[tuple[float, float]]) -> float | None:
        """Least-squares slope per hour, over the points after the warm-up."""
        after = [(t, v) for t, v in points if t >= _hours(self.settings.warmup)]
        return least_squares_slope(after)


def least_squares_slope(points: Sequence[tuple[float, float]]) -> float | None:
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if spread == 0:
        return None
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread


def _pct(values: Sequence[float], q: int) -> float:
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def _hours(seconds: float) -> float:
    return seconds / 3600


async def _sample(client: httpx.AsyncClient, live: LiveCluster) -> ProcessSample:
    pid = live.gateway.pid
    text = (await client.get(f"{live.base_url}/metrics")).text
    tasks = next(
        int(float(line.split()[-1]))
        for line in text.splitlines()
        if line.startswith("booagent_event_loop_tasks ")
    )
    return ProcessSample(memory_kib(pid)["VmRSS"], len(os.listdir(f"/proc/{pid}/fd")), tasks)


async def _run(settings: SoakSettings, report: SoakReport, echo: Echo) -> None:
    with tempfile.TemporaryDirectory(prefix="booagent-bench-soak-") as tmp:
        async with live_cluster(settings.chaos.config, Path(tmp)) as live:
            ports, marker = live.ports, str(live.config_path)
            echo(f"cluster ready; soak for {settings.chaos.duration / 3600:g} h")
            async with (
                httpx.AsyncClient(timeout=10, trust_env=False) as client,
                Periodic(lambda: _sample(client, live), settings.sample_every) as sampler,
            ):
                report.samples = sampler.samples
                await chaos_load(live, settings.chaos, report.chaos, echo)
        report.chaos.leftovers = leftovers(ports, marker)


def run_soak(settings: SoakSettings, echo: Echo = lambda _: None) -> SoakReport:
    """Start the chaos cluster, run the load and kills for the duration while sampling the
    gateway, stop everything."""
    chaos = ChaosReport(settings.chaos, machine(), datetime.datetime.now().astimezone())
    report = SoakReport(settings, chaos)
    asyncio.run(_run(settings, report, echo))
    chaos.load_after = os.getloadavg()
    return report
