"""The committed stream: one node's answer from its commit point on, or several nodes' in turn.

:func:`relay` hands the chunks of a :class:`Leg` (one node's part of the answer) to whoever
reads the reply, and scores the node when its part ends. When the node fails mid-answer, the
pool's ``resume`` gives the leg of another node of the same member that goes on with the
answer (:mod:`backends.continuation`), or raises :class:`backends.errors.StreamInterrupted`,
which ends the stream. After a hand-over the later legs' bookkeeping chunks (a second
``role``, their own usage) are dropped, and the answer ends with one usage chunk that counts
every leg: each leg's own usage when its node sent one, else its prompt as the pool counted it
and a token per content chunk.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass, field
from typing import Any

from backends.base import Chunk
from backends.continuation import Partial
from backends.errors import NodeError
from backends.node import ManagedNode

_LENGTH = Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})


@dataclass(slots=True)
class Leg:
    """One node's part of a committed answer: the chunks read up to its commit (``head``),
    then the rest from ``chunks``; ``held`` keeps its slots and its response (closing it frees
    them). ``started`` is the loop time it was asked, ``ttft`` the seconds to its first
    content, ``prompt_tokens`` its prompt as the pool counted it; ``tokens`` and ``usage``
    (its node's own, if it sent one) are known when it ends."""

    node: ManagedNode
    chunks: AsyncIterator[Chunk]
    head: list[Chunk]
    held: AsyncExitStack
    started: float
    ttft: float
    prompt_tokens: int = 0
    queue_wait: float = 0.0
    tokens: int = 0
    usage: Mapping[str, Any] | None = field(default=None, repr=False)

    def failed(self, error: NodeError) -> None:
        self.node.health.failed(f"{error.reason}: {error.message}")
        self.node.stats.failed += 1

    def succeeded(self) -> None:
        self.node.health.succeeded()
        elapsed = asyncio.get_running_loop().time() - self.started
        self.node.stats.record(self.ttft, self.tokens, elapsed)

    def used(self) -> tuple[int, int]:
        """Prompt and completion tokens: the node's usage, else counted."""
        usage = self.usage or {}
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        return (
            prompt if isinstance(prompt, int) else self.prompt_tokens,
            completion if isinstance(completion, int) else self.tokens,
        )


Resume = Callable[[Leg, Partial, NodeError], Awaitable[Leg]]
"""The next leg of an answer whose leg failed with the error: another node going on with the
answer so far; raises :class:`backends.errors.StreamInterrupted` when none can."""


async def relay(leg: Leg, resume: Resume, max_tokens: Any = None) -> AsyncGenerator[Chunk, None]:
    """The committed answer's chunks, leg after leg; each node is scored when its leg ends.

    A node that fails after its answer's ``finish_reason``, or once the answer has all its
    ``max_tokens``, has given the whole answer: the stream ends there (with ``length`` in the
    second case). The first leg's chunks pass as they are (their text is noted, for a
    hand-over)."""
    partial = Partial()
    legs = [leg]
    try:
        while True:
            before = partial.tokens
            try:
                if len(legs) == 1:
                    for chunk in leg.head:
                        partial.add(chunk)
                        yield chunk
                    async for chunk in leg.chunks:
                        partial.add(chunk)
                        yield chunk
                else:
                    async with aclosing(_later(leg, partial)) as later:
                        async for chunk in later:
                            yield chunk
            except NodeError as exc:
                leg.tokens = partial.tokens - before
                if (end := await _ended(leg, exc, partial, max_tokens)) is not None:
                    if end:
                        yield end[0]
                    break
                leg = await resume(leg, partial, exc)
                legs.append(leg)
                continue
            leg.tokens = partial.tokens - before
            leg.succeeded()
            break
        if len(legs) > 1:
            yield _usage(legs)
    finally:
        await leg.held.aclose()


async def _ended(
    leg: Leg, error: NodeError, partial: Partial, max_tokens: Any
) -> tuple[Chunk, ...] | None:
    """Score and close a leg whose node failed. The chunks that end the answer when it was
    already whole (a finish reason, or all its ``max_tokens``); None when it goes on."""
    leg.failed(error)
    await leg.held.aclose()
    if partial.finished:
        return ()
    return (_LENGTH,) if partial.spent(max_tokens) else None


async def _later(leg: Leg, partial: Partial) -> AsyncGenerator[Chunk, None]:
    """A later leg's chunks as relayed: without its node's usage (the answer's is sent at its
    end), and without those that carry nothing else (a second ``role``, a usage chunk)."""
    for chunk in leg.head:
        if (shown := _shown(chunk, leg)) is not None:
            partial.add(shown)
            yield shown
    async for chunk in leg.chunks:
        if (shown := _shown(chunk, leg)) is not None:
            partial.add(shown)
            yield shown


def _shown(chunk: Chunk, leg: Leg) -> Chunk | None:
    if chunk.usage is not None:
        leg.usage = chunk.usage
        chunk = Chunk({k: v for k, v in chunk.data.items() if k != "usage"}, more=chunk.more)
    if not chunk.is_content and chunk.finish_reason is None:
        return None
    return chunk


def _usage(legs: list[Leg]) -> Chunk:
    prompt = sum(leg.used()[0] for leg in legs)
    completion = sum(leg.used()[1] for leg in legs)
    usage = {"prompt_tokens": prompt, "completion_tokens": completion}
    return Chunk({"choices": [], "usage": {**usage, "total_tokens": prompt + completion}})


async def until_commit(chunks: AsyncIterator[Chunk], *, whole: bool) -> tuple[list[Chunk], float]:
    """Read up to and including the first content chunk (or, if ``whole``, to the end).
    Returns the chunks read and the loop time at which the first content chunk arrived (the
    time the reading ended, if none did)."""
    loop = asyncio.get_running_loop()
    head: list[Chunk] = []
    first: float | None = None
    async for chunk in chunks:
        head.append(chunk)
        if chunk.is_content and first is None:
            first = loop.time()
            if not whole:
                break
    return head, loop.time() if first is None else first
