"""The seam between strategies and nodes.

A :class:`Backend` answers one chat request with a :class:`Reply`: the stream of
:class:`Chunk` objects together with where it came from (node, member, the attempts it took,
the failures on the way, the time spent queued), as httpx's ``Response`` carries its request
and history. Streams are async context managers: leaving the block always closes the upstream
response, so a client that disconnects frees the node's slot at once. Composites (a failover
pool) implement the same seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from backends.errors import NodeError


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """An OpenAI chat request as forwarded to a node.

    ``body`` holds the fields the node should see; ``model``, ``stream`` and ``stream_options``
    are set by the backend itself. ``members`` lists the members allowed to answer, most
    preferred first; ``prefer_idle`` asks for an idle node over the most preferred member.
    ``buffered`` moves the commit point to the end of the answer: for clients that get the
    answer in one piece, a node failing mid-answer is retried elsewhere invisibly too.
    ``priority`` orders the queues: 0 for a user's own turn, 1 for background chores;
    ``client`` (an API key's name) takes turns in them with the other clients.
    ``prompt_tokens`` is what the pool counted (or estimated) of the prompt for the member it
    is sent to; the node's first-token limit grows with it.
    """

    body: Mapping[str, Any]
    members: tuple[str, ...] = ()
    prefer_idle: bool = False
    buffered: bool = False
    priority: int = 0
    prompt_tokens: int = 0
    client: str = ""


@dataclass(frozen=True, slots=True)
class Chunk:
    """One parsed `chat.completion.chunk` from a node.

    ``more`` says the next chunk of the same answer had already arrived when this one was read
    (only the node client sets it): whoever relays this chunk hands on the next one without
    waiting for anything else, so a writer may hold this one and send both in one write.
    """

    data: Mapping[str, Any]
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


@dataclass(frozen=True, slots=True)
class Reply:
    """A node's answer as it arrives, and where it came from.

    ``attempts`` names every node the request was sent to, in order, the answering one last;
    ``failures`` are the errors of the attempts before it; ``queue_wait`` is the time spent
    waiting for slots, over all attempts; ``started`` the loop time the first attempt began;
    ``first_token`` the seconds from the start of the answering attempt to its first content
    chunk; ``fitted`` what fitting the request to the members' contexts did (members left out
    because the prompt did not fit them, ``max_tokens`` clamped); ``prompt_tokens`` the
    prompt's tokens on the answering member as the pool counted or estimated them (usage
    falls back on it when the node reports none). Iterating a reply iterates its chunks.
    """

    chunks: AsyncIterator[Chunk]
    node: str
    member: str
    attempts: tuple[str, ...] = ()
    failures: tuple[NodeError, ...] = ()
    queue_wait: float = 0.0
    started: float = 0.0
    first_token: float = 0.0
    fitted: tuple[str, ...] = ()
    prompt_tokens: int = 0

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self.chunks


class Backend(Protocol):
    """Anything that can stream a chat answer: one node, or a pool of them."""

    name: str

    def stream(self, request: ChatRequest) -> AbstractAsyncContextManager[Reply]:
        """Open the answer's stream; the reply names the node that answers."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
