"""The strategy seam: one call that turns a request body into a committed answer stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from backends.base import ChatRequest, Chunk, Served


class Strategy(Protocol):
    """Answers a chat request body; ``served`` records who answered and how."""

    @property
    def name(self) -> str: ...

    def __call__(
        self, request: ChatRequest, served: Served
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        """Answer ``request`` (whose ``members`` the strategy fills in)."""
        ...
