"""What a benchmark watches while it runs: periodic samples, and the gateway's request log.

:class:`Periodic` calls a function every ``interval`` seconds in a background task and keeps
``(monotonic time, value)`` pairs; a failed call is skipped, not fatal (the gateway may be
busy, a process may be gone). :func:`cluster_sample` reads ``GET /v1/cluster`` into per-node
``(in_flight, queued)``; :func:`request_log` reads the gateway's ``chat_completion`` lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, TypeVar

import httpx

from bench.procs import memory_kib

T = TypeVar("T")
NodeLoad = dict[str, tuple[int, int]]


class Periodic(Generic[T]):
    """Samples ``probe()`` every ``interval`` seconds between ``async with`` entry and exit."""

    def __init__(self, probe: Callable[[], Awaitable[T]], interval: float) -> None:
        self.samples: list[tuple[float, T]] = []
        self._probe = probe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                value = await self._probe()
                self.samples.append((time.monotonic(), value))
            await asyncio.sleep(self._interval)

    def between(self, start: float, end: float) -> list[T]:
        return [value for at, value in self.samples if start <= at <= end]

    async def __aenter__(self) -> Periodic[T]:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def cluster_sampler(client: httpx.AsyncClient, base: str, interval: float) -> Periodic[NodeLoad]:
    """Per-node ``(in_flight, queued)`` from ``GET /v1/cluster``."""

    async def probe() -> NodeLoad:
        response = await client.get(f"{base}/v1/cluster")
        return cluster_sample(response.json())

    return Periodic(probe, interval)


def cluster_sample(body: dict[str, Any]) -> NodeLoad:
    return {n["name"]: (int(n["in_flight"]), int(n["queued"])) for n in body["nodes"]}


def rss_sampler(pid: int, interval: float) -> Periodic[int]:
    """The process's resident memory in KiB (``VmRSS``)."""

    async def probe() -> int:
        return memory_kib(pid)["VmRSS"]

    return Periodic(probe, interval)


def busy_fraction(samples: list[NodeLoad], node: str) -> float:
    """Share of samples in which the node had a request in flight."""
    seen = [s[node][0] > 0 for s in samples if node in s]
    return sum(seen) / len(seen) if seen else 0.0


def mean_queued(samples: list[NodeLoad], node: str) -> float:
    seen = [s[node][1] for s in samples if node in s]
    return sum(seen) / len(seen) if seen else 0.0


def request_log(path: Path) -> dict[str, dict[str, Any]]:
    """The gateway's ``chat_completion`` log lines, by request id."""
    found: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        if '"chat_completion"' not in line:
            continue
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if record.get("event") == "chat_completion" and record.get("request_id"):
                found[record["request_id"]] = record
    return found
