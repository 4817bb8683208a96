"""`booagent bench overhead`: what the gateway adds to a request, against a fast upstream.

The same load goes directly to the upstream and through the gateway in the same run,
interleaved: each load level runs in rounds, and each round runs every target one after the
other (the order alternating), so drift in the machine's speed affects all alike. Gateway CPU
time is read from ``/proc`` around its own rounds only. Per-chunk relay cost is the slope of
the added stream time between a short answer and a ``chunks``-token one at concurrency 1.
The bounds (:mod:`bench.stack`) run in the same rounds: what a server doing less than any
gateway serves, as a ceiling for the gateway's throughput.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import (
    Connection,
    Phase,
    chat_request,
    close_connections,
    open_connections,
    run_phase,
)
from bench.procs import Processes, cpu_seconds, memory_kib
from bench.report import Machine, machine
from bench.stack import BOUNDS, Stack, model_for, start_stack
from bench.stats import Side, Spread, summarise

SHORT_ANSWER = 4
Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class OverheadSettings:
    """``requests`` per load level and target, split into ``rounds``."""

    requests: int = 2000
    concurrency: tuple[int, ...] = (1, 16, 64)
    chunks: int = 100
    rounds: int = 4
    warmup: int = 100


@dataclass(frozen=True, slots=True)
class Level:
    """One mode at one concurrency: direct, through the gateway, each bound, and what the
    gateway added."""

    stream: bool
    concurrency: int
    tokens: int
    direct: Side
    gateway: Side
    bounds: dict[str, Side]

    @property
    def mode(self) -> str:
        return "stream" if self.stream else "whole"

    @property
    def added(self) -> Spread:
        return self.gateway.latency.minus(self.direct.latency)

    @property
    def added_ttft(self) -> Spread:
        return self.gateway.ttft.minus(self.direct.ttft)

    @property
    def ratio(self) -> float:
        return self.gateway.rps / self.direct.rps if self.direct.rps else math.nan

    def bound_ratio(self, name: str) -> float:
        """What bound ``name`` serves, as a share of direct: a ceiling of ``ratio``."""
        return self.bounds[name].rps / self.direct.rps if self.direct.rps else math.nan


@dataclass(frozen=True, slots=True)
class Relay:
    """Per-chunk cost of relaying a stream, from a short and a long answer at concurrency 1."""

    short: Level
    long: Level

    @property
    def per_chunk_us(self) -> float:
        extra = self.long.added.p50 - self.short.added.p50
        return extra / (self.long.tokens - self.short.tokens) * 1000


@dataclass(slots=True)
class OverheadReport:
    settings: OverheadSettings
    machine: Machine
    started: datetime.datetime
    levels: list[Level] = field(default_factory=list)
    relay: Relay | None = None
    gateway_peak_rss_kib: int = 0
    gateway_rss_kib: int = 0
    upstream_peak_rss_kib: int = 0
    pids: tuple[int, ...] = ()
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)


class _Bench:
    """Runs levels against one stack."""

    def __init__(self, stack: Stack, settings: OverheadSettings) -> None:
        self.stack = stack
        self.settings = settings

    async def level(
        self, stream: bool, concurrency: int, tokens: int, requests: int, *, bounds: bool = True
    ) -> Level:
        """Warm every target up, then run the interleaved rounds; summarise each target (the
        bounds too, unless ``bounds`` is false)."""
        targets = self.stack.targets if bounds else self.stack.targets[:2]
        conns = {t.name: await open_connections(t, concurrency) for t in targets}
        asks = {
            t.name: [chat_request(t, model_for(t), stream=stream, tokens=tokens)] for t in targets
        }
        phases: dict[str, list[Phase]] = {t.name: [] for t in targets}
        cpu = dict.fromkeys(phases, 0.0)
        try:
            for t in targets:
                warmup = max(self.settings.warmup, 2 * concurrency)
                await run_phase(conns[t.name], asks[t.name], warmup)
            per_round = max(1, math.ceil(requests / self.settings.rounds))
            for index in range(self.settings.rounds):
                for t in targets if index % 2 == 0 else targets[::-1]:
                    phase, seconds = await self._timed(conns[t.name], asks[t.name], per_round)
                    phases[t.name].append(phase)
                    cpu[t.name] += seconds
        finally:
            for connections in conns.values():
                await close_connections(connections)
        sides = {t.name: summarise(phases[t.name], tokens, cpu[t.name]) for t in targets}
        direct, through = sides.pop("direct"), sides.pop("gateway")
        return Level(stream, concurrency, tokens, direct, through, bounds=sides)

    async def _timed(
        self, connections: Sequence[Connection], asks: Sequence[bytes], count: int
    ) -> tuple[Phase, float]:
        """One phase, and the gateway's CPU seconds during it."""
        before = cpu_seconds(self.stack.gateway.pid)
        phase = await run_phase(connections, asks, count)
        return phase, cpu_seconds(self.stack.gateway.pid) - before

    async def run(self, report: OverheadReport, progress: Progress) -> None:
        settings = self.settings
        for stream in (False, True):
            for concurrency in settings.concurrency:
                level = await self.level(stream, concurrency, SHORT_ANSWER, settings.requests)
                report.levels.append(level)
                progress(_note(level))
        half = max(1, settings.requests // 2)
        short = await self.level(True, 1, SHORT_ANSWER, half, bounds=False)
        long = await self.level(True, 1, settings.chunks, half, bounds=False)
        report.relay = Relay(short, long)
        progress(f"relay: {report.relay.per_chunk_us:.1f} us per chunk")


def _note(level: Level) -> str:
    return (
        f"{level.mode:>6} c={level.concurrency:<3} added p50 {level.added.p50:7.2f} ms  "
        f"p99 {level.added.p99:7.2f} ms  {level.gateway.rps:6.0f} req/s "
        f"({level.ratio:.0%} of direct; "
        + ", ".join(f"{name} {level.bound_ratio(name):.0%}" for name in level.bounds)
        + ")"
    )


def run_overhead(settings: OverheadSettings, progress: Progress | None = None) -> OverheadReport:
    """Start the upstream and the gateway, measure, stop both; never leaves a process."""
    report = OverheadReport(settings, machine(), datetime.datetime.now().astimezone())
    with (
        tempfile.TemporaryDirectory(prefix="booagent-bench-") as tmp,
        Processes(Path(tmp)) as procs,
    ):
        stack = start_stack(procs, list(BOUNDS))
        report.pids = stack.pids
        asyncio.run(_Bench(stack, settings).run(report, progress or (lambda _: None)))
        gateway = memory_kib(stack.gateway.pid)
        report.gateway_peak_rss_kib = gateway["VmHWM"]
        report.gateway_rss_kib = gateway["VmRSS"]
        report.upstream_peak_rss_kib = memory_kib(stack.upstream.pid)["VmHWM"]
    report.load_after = os.getloadavg()
    return report


def concurrency_levels(text: str | Sequence[int]) -> tuple[int, ...]:
    """``"1,16,64"`` or a sequence of ints, as a tuple of positive levels."""
    values = [int(v) for v in text.split(",")] if isinstance(text, str) else list(text)
    if not values or any(v < 1 for v in values):
        raise ValueError("concurrency levels must be positive integers")
    return tuple(values)
