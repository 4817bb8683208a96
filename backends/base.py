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
    """One parsed `chat.completion.chunk` from a node.

    A ``keepalive`` chunk carries nothing: a strategy still working says it is alive (the
    gateway turns it into an SSE comment for streaming clients). ``more`` says the next chunk of
    the same answer had already arrived when this one was read (only the node client sets it):
    whoever relays this chunk hands on the next one without waiting for anything else, so a
    writer may hold this one and send both in one write.
    """

    data: Mapping[str, Any]
    keepalive: bool = False
    more: bool = False
    choice: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    """The first choice (empty when there is none); read once, as every consumer asks for it."""
    delta: Mapping[str, Any] = field(init=False, repr=False, compare=False)
    """The first choice's ``delta`` (empty when there is none)."""

    def __post_init__(self) -> None:
        choices = self.data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        choice = first if isinstance(first, dict) else {}
        delta = choice.get("delta")
        object.__setattr__(self, "choice", choice)
        object.__setattr__(self, "delta", delta if isinstance(delta, dict) else {})

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
    """Where an answer came from: filled in by the backend and strategy as the request goes.

    ``decision`` and ``calls`` become the ``booagent`` object of the answer (which members
    were asked, how each did, who won and why); ``extra_usage`` adds the tokens of member
    calls whose text the client does not see, so ``usage`` covers every call made.
    """

    node: str = ""
    member: str = ""
    kind: str = ""
    strategy: str = ""
    attempts: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    queue_wait: float = 0.0
    decision: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    extra_usage: dict[str, int] = field(default_factory=dict)

    def add_usage(self, usage: Mapping[str, int]) -> None:
        """Count tokens of a call whose answer is not relayed to the client."""
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            self.extra_usage[key] = self.extra_usage.get(key, 0) + int(usage.get(key, 0))


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
