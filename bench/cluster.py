"""`booagent bench cluster`: the real cluster under a mixed workload at rising concurrency.

First each node is measured alone, directly (one request at a time, the short prompt set of
:func:`bench.workload.alone_set`): time to first token, decode speed, and tokens per second of
wall time, the node's serving rate. Then the mixed workload goes through the gateway with the
official SDK, ``concurrency`` closed-loop workers per level for ``duration`` seconds (requests
still running at the end are waited for and counted). Per level: requests/s, latency and time
to first token, the queue wait the gateway logged for each request, per-node utilisation (the
share of ``GET /v1/cluster`` samples, every 0.5 s, with a request in flight), how requests
spread over the nodes, and the cluster's tokens/s against the sum of the nodes alone.

The default model is ``booagent-cluster:route``: one node call per request, so load spread and
tokens/s measure the scheduler (admission, selection, queueing) rather than the cascade's and
ensemble's extra calls, which ``booagent eval`` measures.
"""

from __future__ import annotations

import asyncio
import datetime
import itertools
import os
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.live import LiveCluster, leftovers, live_cluster
from bench.report import Machine, machine
from bench.sampling import (
    NodeLoad,
    Periodic,
    busy_fraction,
    cluster_sampler,
    mean_queued,
    request_log,
)
from bench.sdk_client import Outcome, ask, sdk_client
from bench.stats import Spread
from bench.workload import Prompt, alone_set, mixed
from gateway.settings import DEFAULT_CONFIG

DEFAULT_MODEL = "booagent-cluster:route"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    config: Path = DEFAULT_CONFIG
    concurrency: tuple[int, ...] = (1, 2, 4, 8)
    duration: float = 60.0
    model: str = DEFAULT_MODEL
    max_tokens: int = 96
    chore_tokens: int = 32
    sample_interval: float = 0.5


@dataclass(frozen=True, slots=True)
class NodeAlone:
    """One node answering the short prompt set by itself, one request at a time."""

    node: str
    member: str
    outcomes: tuple[Outcome, ...]
    wall: float

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def tokens(self) -> int:
        return sum(o.tokens for o in self.ok)

    @property
    def throughput(self) -> float:
        """Tokens per second of wall time, prompt processing included."""
        return self.tokens / self.wall if self.wall else 0.0

    @property
    def ttft(self) -> Spread:
        return Spread.of([t for o in self.ok if (t := o.ttft) is not None])

    @property
    def decode(self) -> float:
        """Median tokens/s after the first token."""
        rates = [
            (o.tokens - 1) / (o.ended - o.first_token)
            for o in self.ok
            if o.first_token is not None and o.tokens > 1 and o.ended > o.first_token
        ]
        return statistics.median(rates) if rates else 0.0


@dataclass(frozen=True, slots=True)
class LevelRun:
    """One concurrency level through the gateway."""

    concurrency: int
    outcomes: tuple[Outcome, ...]
    wall: float
    loads: tuple[NodeLoad, ...]
    log: dict[str, dict[str, Any]]

    @property
    def ok(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.ok]

    @property
    def errors(self) -> int:
        return len(self.outcomes) - len(self.ok)

    @property
    def rps(self) -> float:
        return len(self.ok) / self.wall if self.wall else 0.0

    @property
    def tokens_per_second(self) -> float:
        return sum(o.tokens for o in self.ok) / self.wall if self.wall else 0.0

    @property
    def latency(self) -> Spread:
        return Spread.of([o.latency for o in self.ok])

    @property
    def ttft(self) -> Spread:
        return Spread.of([t for o in self.ok if (t := o.ttft) is not None])

    @property
    def queue_wait(self) -> Spread:
        waits = [
            self.log[o.request_id].get("queue_wait_s") for o in self.ok if o.request_id in self.log
        ]
        return Spread.of([float(w) for w in waits if w is not None])

    def requests_by_node(self) -> Counter[str]:
        return Counter(o.node for o in self.ok)

    def busy(self, node: str) -> float:
        return busy_fraction(list(self.loads), node)

    def queued(self, node: str) -> float:
        return mean_queued(list(self.loads), node)


@dataclass(slots=True)
class ClusterReport:
    settings: ClusterSettings
    machine: Machine
    started: datetime.datetime
    nodes: list[tuple[str, str]] = field(default_factory=list)
    alone: list[NodeAlone] = field(default_factory=list)
    levels: list[LevelRun] = field(default_factory=list)
    leftovers: list[int] = field(default_factory=list)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def sum_alone(self) -> float:
        """What the nodes serve when each has the machine to itself, added up."""
        return sum(a.throughput for a in self.alone)


async def _alone(live: LiveCluster, node: str, prompts: Sequence[Prompt]) -> NodeAlone:
    member = live.member_of(node)
    client = sdk_client(live.node_url(node) + "/v1")
    async with client:
        warm_up = Prompt("warm-up", "Hello!", True, 4)
        await ask(client, member, warm_up, f"warm-{node}", send_id=False)
        outcomes = []
        started = time.monotonic()
        for index, prompt in enumerate(prompts):
            outcome = await ask(client, member, prompt, f"alone-{node}-{index}", send_id=False)
            outcome.node = node
            outcomes.append(outcome)
        wall = time.monotonic() - started
    return NodeAlone(node, member, tuple(outcomes), wall)


async def _level(
    live: LiveCluster, sampler: Periodic[NodeLoad], settings: ClusterSettings, concurrency: int
) -> LevelRun:
    prompts = mixed(settings.max_tokens, settings.chore_tokens)
    numbers = itertools.count()
    outcomes: list[Outcome] = []
    client = sdk_client(live.base_url + "/v1")
    started = time.monotonic()
    stop_at = started + settings.duration

    async def worker() -> None:
        while time.monotonic() < stop_at:
            n = next(numbers)
            prompt = prompts[n % len(prompts)]
            outcomes.append(await ask(client, settings.model, prompt, f"bench-c{concurrency}-{n}"))

    async with client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    ended = time.monotonic()
    loads = tuple(sampler.between(started, ended))
    return LevelRun(concurrency, tuple(outcomes), ended - started, loads, {})


async def _measure(live: LiveCluster, settings: ClusterSettings, report: ClusterReport) -> None:
    report.nodes = [(n.name, n.member) for n in live.settings.nodes]
    prompts = alone_set(settings.max_tokens, settings.chore_tokens)
    for name, _ in report.nodes:
        report.alone.append(await _alone(live, name, prompts))
    async with (
        httpx.AsyncClient(timeout=5.0, trust_env=False) as http,
        cluster_sampler(http, live.base_url, settings.sample_interval) as sampler,
    ):
        for concurrency in settings.concurrency:
            report.levels.append(await _level(live, sampler, settings, concurrency))
    log = request_log(live.gateway.log)
    report.levels = [
        LevelRun(lv.concurrency, lv.outcomes, lv.wall, lv.loads, log) for lv in report.levels
    ]


async def _run(settings: ClusterSettings, report: ClusterReport) -> None:
    with tempfile.TemporaryDirectory(prefix="booagent-bench-cluster-") as tmp:
        async with live_cluster(settings.config, Path(tmp)) as live:
            ports, marker = live.ports, str(live.config_path)
            await _measure(live, settings, report)
        report.leftovers = leftovers(ports, marker)


def run_cluster(settings: ClusterSettings) -> ClusterReport:
    """Start the cluster and the gateway, measure, stop everything; never leaves a process."""
    report = ClusterReport(settings, machine(), datetime.datetime.now().astimezone())
    asyncio.run(_run(settings, report))
    report.load_after = os.getloadavg()
    return report
