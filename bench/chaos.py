"""`booagent bench chaos`: sustained mixed load while real nodes are killed and restarted.

The cluster of ``--config`` (default ``bench/chaos.yaml``: three SmolLM2 nodes serving one
member and one Qwen2.5-Coder-0.5B node) is started with the gateway as its own process.
``concurrency`` closed-loop workers send the mixed workload of :mod:`bench.workload` for
``duration`` seconds; a failed request is followed by a 1 s pause, as a client backing off
would. Meanwhile, after a random delay drawn from ``kill_every`` (seeded), a random running
node is SIGKILLed through the supervisor, which restarts it with its usual backoff. With
``spare``, a node is only killed while another one has been up for at least the grace period
(below), so some node can always serve.

Every request is classified by :mod:`bench.exchange`, and every one that did not complete is
judged against the timeline of node states:

- a *failed* request (non-200 or no response) is "failed while a node could serve" when an
  *allowed* node (any node for the virtual model, whose routes fall back to every member; the
  member's nodes for a member name) was up from ``grace`` seconds before the request started
  until it ended. ``grace`` = health interval + health timeout + breaker open time: the longest
  the gateway may, by design, take to see a restarted node again. The strict count (grace 0)
  is reported too.
- an *interrupted* stream is explained when the node that served it (``x-booagent-node``)
  was killed while the stream ran. A committed answer whose node dies goes on on another node
  of its member when one is up, so an interruption while another node of the member had been
  up ``grace`` seconds before the request and stayed up counts against the target of zero.
- a *continued* answer (complete, its ``booagent.continued`` naming the hand-overs) is
  explained when each node it was taken from was killed while the stream ran.
- a *truncated answer presented as complete* is never explained.

Gateway memory is ``VmRSS`` from ``/proc`` every second; growth compares the mean of the first
and last minute (a third of the run each, for runs shorter than three minutes).
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.exchange import COMPLETE, FAILED, INTERRUPTED, TRUNCATED, Exchange, exchange
from bench.live import LiveCluster, Timeline, leftovers, live_cluster
from bench.report import Machine, machine
from bench.sampling import rss_sampler
from bench.workload import Prompt, mixed

CHAOS_CONFIG = Path(__file__).resolve().parent / "chaos.yaml"
FAILURE_PAUSE = 1.0
Echo = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class ChaosSettings:
    config: Path = CHAOS_CONFIG
    duration: float = 300.0
    kill_every: tuple[float, float] = (10.0, 30.0)
    concurrency: int = 4
    seed: int = 7
    model: str = "booagent-cluster"
    max_tokens: int = 64
    spare: bool = False
    progress_every: float = 60.0


@dataclass(frozen=True, slots=True)
class Kill:
    at: float
    node: str
    pid: int | None


@dataclass(slots=True)
class ChaosReport:
    settings: ChaosSettings
    machine: Machine
    started: datetime.datetime
    nodes: list[tuple[str, str]] = field(default_factory=list)
    allowed: tuple[str, ...] = ()
    grace: float = 0.0
    window: tuple[float, float] = (0.0, 0.0)
    exchanges: list[Exchange] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    restarts: int = 0
    timeline: Timeline = field(default_factory=Timeline)
    rss: list[tuple[float, int]] = field(default_factory=list)
    gateway_pid: int = 0
    leftovers: list[int] = field(default_factory=list)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def of(self, outcome: str) -> list[Exchange]:
        return [e for e in self.exchanges if e.outcome == outcome]

    def could_serve(self, ex: Exchange, grace: float) -> bool:
        """An allowed node was up from ``grace`` s before the request until its end."""
        start = ex.started - grace
        return any(self.timeline.up_throughout(n, start, ex.ended) for n in self.allowed)

    def failed_while_serving(self, grace: float) -> list[Exchange]:
        return [e for e in self.of(FAILED) if self.could_serve(e, grace)]

    def interrupted_explained(self, ex: Exchange) -> bool:
        return bool(ex.node) and self.timeline.kills(ex.node, ex.started, ex.ended) > 0

    def members(self) -> dict[str, str]:
        return dict(self.nodes)

    def interrupted_while_member_up(self, grace: float) -> list[Exchange]:
        """Interrupted streams while another node of the serving node's member was up from
        ``grace`` s before the request until its end (it could have gone on with the answer)."""
        member = self.members()
        return [
            e
            for e in self.of(INTERRUPTED)
            if any(
                self.timeline.up_throughout(n, e.started - grace, e.ended)
                for n, m in self.nodes
                if n != e.node and m == member.get(e.node)
            )
        ]

    def continued(self) -> list[Exchange]:
        """Complete answers that went on on another node after theirs failed mid-answer."""
        return [e for e in self.of(COMPLETE) if e.continued]

    def continued_explained(self, ex: Exchange) -> bool:
        """Every node the answer was taken from was killed while the stream ran."""
        return all(
            self.timeline.kills(str(h.get("from")), ex.started, ex.ended) > 0 for h in ex.continued
        )

    def unexplained(self) -> list[Exchange]:
        """Failed while a node could serve (after grace), interrupted without a kill of the
        serving node, and every truncated answer presented as complete."""
        interrupted = [e for e in self.of(INTERRUPTED) if not self.interrupted_explained(e)]
        return [*self.failed_while_serving(self.grace), *interrupted, *self.of(TRUNCATED)]

    def rss_windows(self) -> tuple[float, float, float]:
        """Mean RSS (KiB) of the first and last window, and the window's length in seconds."""
        start, end = self.window
        span = min(60.0, (end - start) / 3)
        first = [kib for at, kib in self.rss if start <= at < start + span]
        last = [kib for at, kib in self.rss if end - span < at <= end]
        return _mean(first), _mean(last), span


def _mean(values: Sequence[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def allowed_nodes(live: LiveCluster, model: str) -> tuple[str, ...]:
    members = {m.name for m in live.settings.members}
    nodes = live.settings.nodes
    return tuple(n.name for n in nodes if model not in members or n.member == model)


def _grace(live: LiveCluster) -> float:
    p = live.settings.policies
    return p.health.interval + p.health.timeout + p.breaker.open_seconds


def _victim(
    live: LiveCluster, settings: ChaosSettings, grace: float, rng: random.Random
) -> str | None:
    now = time.monotonic()
    running = sorted(n for n, s in live.supervisor.states().items() if s == "running")
    if settings.spare:
        steady = {n for n in running if (live.timeline.up_since(n, now) or 0.0) >= grace}
        running = [n for n in running if steady - {n}]
    return rng.choice(running) if running else None


async def _kill_loop(
    live: LiveCluster, settings: ChaosSettings, grace: float, stop_at: float, kills: list[Kill]
) -> None:
    rng = random.Random(settings.seed)
    low, high = settings.kill_every
    while True:
        delay = rng.uniform(low, high)
        if time.monotonic() + delay >= stop_at:
            return
        await asyncio.sleep(delay)
        victim = _victim(live, settings, grace, rng)
        if victim is None:
            continue
        at = time.monotonic()
        kills.append(Kill(at, victim, live.supervisor.pid(victim)))
        live.timeline.killed(victim, at)
        live.supervisor.kill(victim)


async def _load(
    live: LiveCluster,
    settings: ChaosSettings,
    prompts: Sequence[Prompt],
    stop_at: float,
    exchanges: list[Exchange],
) -> None:
    """Closed-loop workers until ``stop_at``; every answer is appended to ``exchanges``."""
    url = f"{live.base_url}/v1/chat/completions"
    numbers = itertools.count()
    timeout = httpx.Timeout(120.0, connect=5.0)
    limits = httpx.Limits(max_connections=settings.concurrency * 2)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < stop_at:
            n = next(numbers)
            prompt = prompts[n % len(prompts)]
            body = prompt.body(settings.model)
            ex = await exchange(client, url, body, f"chaos-{n}", prompt.kind)
            exchanges.append(ex)
            if ex.outcome == FAILED:
                await asyncio.sleep(FAILURE_PAUSE)

    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(settings.concurrency)))


async def _progress(report: ChaosReport, echo: Echo, every: float, start: float) -> None:
    while True:
        await asyncio.sleep(every)
        done = len(report.exchanges)
        rss = report.rss[-1][1] / 1024 if report.rss else 0.0
        echo(
            f"  {time.monotonic() - start:5.0f} s: {done} requests so far, "
            f"{len(report.kills)} kills, gateway RSS {rss:.1f} MiB"
        )


async def chaos_load(
    live: LiveCluster, settings: ChaosSettings, report: ChaosReport, echo: Echo
) -> None:
    """The load and the kills on a running cluster, for ``settings.duration`` seconds."""
    report.nodes = [(n.name, n.member) for n in live.settings.nodes]
    report.allowed = allowed_nodes(live, settings.model)
    report.grace = _grace(live)
    report.timeline = live.timeline
    report.gateway_pid = live.gateway.pid
    prompts = mixed(settings.max_tokens)
    start = time.monotonic()
    stop_at = start + settings.duration
    async with rss_sampler(live.gateway.pid, 1.0) as rss:
        killer = asyncio.create_task(
            _kill_loop(live, settings, report.grace, stop_at, report.kills)
        )
        progress = asyncio.create_task(_progress(report, echo, settings.progress_every, start))
        report.rss = rss.samples
        try:
            await _load(live, settings, prompts, stop_at, report.exchanges)
        finally:
            for task in (killer, progress):
                task.cancel()
            await asyncio.gather(killer, progress, return_exceptions=True)
    report.window = (start, time.monotonic())
    report.restarts = live.timeline.restarts()


async def _run(settings: ChaosSettings, report: ChaosReport, echo: Echo) -> None:
    with tempfile.TemporaryDirectory(prefix="booagent-bench-chaos-") as tmp:
        async with live_cluster(settings.config, Path(tmp)) as live:
            ports, marker = live.ports, str(live.config_path)
            count = len(live.settings.nodes)
            echo(f"cluster ready ({count} nodes); load for {settings.duration:g} s")
            await chaos_load(live, settings, report, echo)
        report.leftovers = leftovers(ports, marker)


def run_chaos(settings: ChaosSettings, echo: Echo = lambda _: None) -> ChaosReport:
    """Start the cluster and the gateway, run the load and the kills, stop everything."""
    report = ChaosReport(settings, machine(), datetime.datetime.now().astimezone())
    asyncio.run(_run(settings, report, echo))
    report.load_after = os.getloadavg()
    return report


def kill_range(text: str) -> tuple[float, float]:
    """``"10-30"`` (or ``"15"``) as a (low, high) pair of positive seconds."""
    low, _, high = text.partition("-")
    pair = (float(low), float(high or low))
    if pair[0] <= 0 or pair[1] < pair[0]:
        raise ValueError("--kill-every must be S or LOW-HIGH with 0 < LOW <= HIGH")
    return pair
