"""The strategy seam: one call that turns a request into a committed answer stream.

Strategies that consult several members stream :data:`KEEPALIVE` chunks while they work, so
streaming clients see SSE comments instead of silence, then the chosen answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal, Protocol

import msgspec

from backends.base import ChatRequest, Chunk, Served

StrategyName = Literal["auto", "route", "cascade", "ensemble", "program"]
KEEPALIVE = Chunk({}, keepalive=True)


class Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The request's own ``booagent`` object (the SDK's ``extra_body``)."""

    strategy: StrategyName | None = None
    members: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None = None
    deadline_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] | None = None
    samples: Annotated[int, msgspec.Meta(ge=1, le=8)] | None = None
    explain: bool = False


NO_OPTIONS = Options()


class Strategy(Protocol):
    """Answers a chat request; ``served`` records who answered and how."""

    @property
    def name(self) -> str: ...

    def __call__(
        self, request: ChatRequest, served: Served, options: Options = NO_OPTIONS
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        """Answer ``request`` (whose ``members`` the strategy fills in)."""
        ...


async def keepalives(task: asyncio.Future[Any], interval: float) -> AsyncIterator[Chunk]:
    """Yield a keep-alive every ``interval`` seconds until ``task`` is done."""
    while not task.done():
        await asyncio.wait({task}, timeout=interval)
        if not task.done():
            yield KEEPALIVE
