"""Run items through targets (models on a gateway) and score every answer: per-item records.

``run()`` is the library entry point (``booagent eval`` calls it too); ``cached_records()``
gives the same records from the cache alone, for scripts that fit cascade thresholds on the
dev split without asking any model again::

    from evals.items import load_suite, select
    from evals.runner import cached_records

    dev = select(load_suite(), split="dev")
    for record in cached_records(["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"], dev):
        record.correct, record.answer, record.latency, record.metadata
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.cache import DEFAULT_CACHE, Answer, Cache, Key, ToolCall
from evals.client import Asker, AskError, Sampling
from evals.items import Item, Kind, Split
from evals.score import score


@dataclass(frozen=True, slots=True)
class Record:
    """One item asked of one target, and how the answer scored.

    ``latency`` is the request's wall time in seconds (as the client saw it, at the time it was
    asked, even when the answer now comes from the cache); ``node_seconds`` sums the member
    calls the request caused (see :func:`node_seconds`). ``tool_calls`` are the calls the
    answer made (``answer`` is its text). ``error`` is set when there was no answer; such a
    record is incorrect and is not cached.
    """

    target: str
    item_id: str
    kind: Kind
    split: Split
    answer: str
    correct: bool
    detail: str
    latency: float
    node_seconds: float
    usage: dict[str, int] | None = None
    node: str | None = None
    strategy: str | None = None
    metadata: dict[str, Any] | None = None
    error: str | None = None
    cached: bool = False
    tool_calls: tuple[ToolCall, ...] = ()


OnRecord = Callable[[Record, int, int], None]
DEFAULT_SAMPLING = Sampling()


@dataclass(frozen=True, slots=True)
class Job:
    target: str
    item: Item


@dataclass(slots=True)
class _Progress:
    total: int
    on_record: OnRecord | None
    done: int = field(default=0)

    def tick(self, record: Record) -> None:
        self.done += 1
        if self.on_record is not None:
            self.on_record(record, self.done, self.total)


def node_seconds(metadata: dict[str, Any] | None, latency: float) -> float:
    """Seconds of node time a request used: the sum of its member calls' ``latency_s`` from the
    ``booagent`` metadata (``calls``), else the request's own latency (one member call)."""
    calls = (metadata or {}).get("calls")
    if not isinstance(calls, list) or not calls:
        return latency
    seconds = [c.get("latency_s") for c in calls if isinstance(c, dict)]
    numbers = [float(s) for s in seconds if isinstance(s, int | float)]
    return sum(numbers) if numbers else latency


def cache_key(target: str, item: Item, sampling: Sampling) -> Key:
    return Key(
        target, item.id, item.prompt_hash, sampling.max_tokens, sampling.temperature, sampling.seed
    )


def to_record(target: str, item: Item, answer: Answer, *, cached: bool) -> Record:
    """Score ``answer`` to ``item`` (runs code answers in the sandbox)."""
    verdict = score(item, answer.text, answer.tool_calls)
    return Record(
        target=target,
        item_id=item.id,
        kind=item.kind,
        split=item.split,
        answer=answer.text,
        correct=verdict.correct,
        detail=verdict.detail,
        latency=answer.latency,
        node_seconds=node_seconds(answer.metadata, answer.latency),
        usage=answer.usage,
        node=answer.node,
        strategy=answer.strategy,
        metadata=answer.metadata,
        cached=cached,
        tool_calls=answer.tool_calls,
    )


def _failed(job: Job, error: AskError) -> Record:
    item = job.item
    return Record(
        target=job.target,
        item_id=item.id,
        kind=item.kind,
        split=item.split,
        answer="",
        correct=False,
        detail="no answer",
        latency=error.latency,
        node_seconds=error.latency,
        error=error.message,
    )


async def _one(job: Job, asker: Asker, cache: Cache, sampling: Sampling) -> Record:
    key = cache_key(job.target, job.item, sampling)
    answer = cache.get(key)
    if answer is not None:
        return await asyncio.to_thread(to_record, job.target, job.item, answer, cached=True)
    try:
        answer = await asker.ask(job.target, job.item.body, sampling)
    except AskError as exc:
        return _failed(job, exc)
    cache.put(key, answer)
    return await asyncio.to_thread(to_record, job.target, job.item, answer, cached=False)


async def run_async(
    asker: Asker,
    targets: Sequence[str],
    items: Sequence[Item],
    cache: Cache,
    *,
    sampling: Sampling = DEFAULT_SAMPLING,
    concurrency: int = 1,
    on_record: OnRecord | None = None,
) -> list[Record]:
    """Ask every target every item (cache first), ``concurrency`` requests at a time.

    Jobs go target by target, each through every item in order, so every target meets a node
    in the same state: ``llama_cpp.server`` reuses the prompt it evaluated last (its KV cache),
    and the arithmetic differs with what it reuses. Asked item by item, the 1.5B always found
    the item's own prompt cached (``auto`` had just asked it) while ``auto`` found the previous
    item's, and the same model, prompt and seed scored 89% against 77% on math over two runs.
    Records come back in job order.
    """
    jobs = [Job(target, item) for target in targets for item in items]
    progress = _Progress(len(jobs), on_record)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def guarded(job: Job) -> Record:
        async with gate:
            record = await _one(job, asker, cache, sampling)
        progress.tick(record)
        return record

    return list(await asyncio.gather(*(guarded(job) for job in jobs)))


def run(  # noqa: PLR0913 - the run's whole configuration, all keyword-only
    url: str,
    targets: Sequence[str],
    items: Sequence[Item],
    *,
    cache_path: Path | str = DEFAULT_CACHE,
    sampling: Sampling = DEFAULT_SAMPLING,
    concurrency: int = 1,
    api_key: str = "unused",
    on_record: OnRecord | None = None,
) -> list[Record]:
    """Synchronous :func:`run_async` against the gateway at ``url``, with its own cache handle."""

    async def main() -> list[Record]:
        async with Asker(url, api_key=api_key) as asker:
            with Cache(cache_path) as cache:
                return await run_async(
                    asker,
                    targets,
                    items,
                    cache,
                    sampling=sampling,
                    concurrency=concurrency,
                    on_record=on_record,
                )

    return asyncio.run(main())


def cached_records(
    targets: Sequence[str],
    items: Sequence[Item],
    *,
    cache_path: Path | str = DEFAULT_CACHE,
    sampling: Sampling = DEFAULT_SAMPLING,
) -> list[Record]:
    """Records for the (target, item) pairs already in the cache; asks no model."""
    records: list[Record] = []
    with Cache(cache_path) as cache:
        for item in items:
            for target in targets:
                answer = cache.get(cache_key(target, item, sampling))
                if answer is not None:
                    records.append(to_record(target, item, answer, cached=True))
    return records
