"""The seam between strategies and nodes.

A :class:`Backend` answers one chat request with a :class:`Reply`: the stream of
:class:`Chunk` objects together with where it came from (node, member, the attempts it took,
the failures on the way, the time spent queued), as httpx's ``Response`` carries its request
and history. Streams are async context managers: leaving the block always closes the upstream
response, so a client that disconnects frees the node's slot at once. Composites (a failover
pool) implement the same seam.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
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
class Continued:
    """A committed answer handed on after its node failed mid-answer (:mod:`backends.continuation`).

    ``error`` is the failure (its ``node`` the node that failed), ``after_chars`` how much answer
    text the client had by then; ``to`` is the node of the same member that went on with it,
    None when none could (the stream then ended with an error). ``tried`` names every node
    asked to go on, ``to`` last; ``failures`` are the errors of those that could not;
    ``queue_wait`` the seconds spent waiting for their slots.
    """

    error: NodeError
    after_chars: int
    to: str | None = None
    tried: tuple[str, ...] = ()
    failures: tuple[NodeError, ...] = ()
    queue_wait: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """As the answer's ``booagent`` object shows it."""
        return {
            "from": self.error.node,
            "to": self.to,
            "after_chars": self.after_chars,
            "reason": self.error.reason,
        }


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

    ``continued`` lists what happened when a node failed after the commit point: the answer
    handed on to another node of the member, or not. The pool adds to it while the chunks
    flow (it cannot be known before), so it is complete once the stream has ended; the
    ``every_*`` properties read it then.
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
    continued: Sequence[Continued] = ()

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self.chunks

    @property
    def every_attempt(self) -> tuple[str, ...]:
        """Every node the answer was asked of: those before the commit, then those asked to
        go on with it."""
        return (*self.attempts, *(node for c in self.continued for node in c.tried))

    @property
    def every_failure(self) -> tuple[NodeError, ...]:
        """Every failed node attempt: before the commit, then each failure mid-answer and
        those of the nodes that could not go on."""
        later = (f for c in self.continued for f in (c.error, *c.failures))
        return (*self.failures, *later)

    @property
    def every_queue_wait(self) -> float:
        return self.queue_wait + sum(c.queue_wait for c in self.continued)


class Backend(Protocol):
    """Anything that can stream a chat answer: one node, or a pool of them."""

    name: str

    def stream(self, request: ChatRequest) -> AbstractAsyncContextManager[Reply]:
        """Open the answer's stream; the reply names the node that answers."""
        ...

    async def aclose(self) -> None:
        """Release connections and background tasks."""
        ...
