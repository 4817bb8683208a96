"""The seam between strategies and nodes.

A :class:`Backend` answers one chat request as a stream of :class:`Chunk` objects. Streams are
async context managers: leaving the block always closes the upstream response, so a client that
disconnects frees the node's slot at once. Composites (a failover pool) implement the same seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI chat request as forwarded to a node.

    ``body`` holds the fields the node should see; ``model``, ``stream`` and ``stream_options``
    are set by the backend itself. ``members`` lists the members allowed to answer, most
    preferred first; ``prefer_idle`` asks for an idle node over the most preferred member.
    ``buffered`` moves the commit point to the end of the answer: for clients that get the
    answer in one piece, a node failing mid-answer is retried elsewhere invisibly too.
    """

    body: Mapping[str, Any]
    members: tuple[str, ...] = ()
    prefer_idle: bool = False
    request_id: str = ""
    buffered: bool = False


@dataclass(frozen=True, slots=True)
class Chunk:
    """One parsed `chat.completion.chunk` from a node."""

    data: Mapping[str, Any]

    @property
    def choice(self) -> Mapping[str, Any]:
        choices = self.data.get("choices") or [{}]
        first = choices[0]
        return first if isinstance(first, Mapping) else {}

    @property
    def delta(self) -> Mapping[str, Any]:
        delta = self.choice.get("delta") or {}
        return delta if isinstance(delta, Mapping) else {}

    @property
    def content(self) -> str:
        text = self.delta.get("content")
        return text if isinstance(text, str) else ""

    @property
    def is_content(self) -> bool:
        """True when the chunk carries answer text, reasoning or a tool call."""
        delta = self.delta
        return bool(
            delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")
        )

    @property
    def finish_reason(self) -> str | None:
        reason = self.choice.get("finish_reason")
        return reason if isinstance(reason, str) else None

    @property
    def usage(self) -> Mapping[str, Any] | None:
        usage = self.data.get("usage")
        return usage if isinstance(usage, Mapping) else None


@dataclass(slots=True)
class Served:
    """Where an answer came from: filled in by the backend as the request proceeds."""

    node: str = ""
    member: str = ""
    kind: str = ""
    attempts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    queue_wait: float = 0.0


class Backend(Protocol):
    """Anything that can stream a chat answer: one node, or a pool of them."""

    name: str

    def stream(
        self, request: ChatRequest, served: Served
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        """Open a stream of chunks; ``served`` is updated with the node that answers."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
