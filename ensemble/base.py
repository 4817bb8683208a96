"""The strategy seam: one call that turns a request body into a committed answer stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from backends.base import Chunk, Served


class Strategy(Protocol):
    """Answers a chat request body; ``served`` records who answered and how."""

    @property
    def name(self) -> str: ...

    def __call__(
        self, body: Mapping[str, Any], served: Served, request_id: str = ""
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]: ...
