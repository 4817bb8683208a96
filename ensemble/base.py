"""The strategy seam: a request, classified once, in; a committed answer and its record out.

A strategy is called with a :class:`Context` (the request as the node sees it, its kind and the
client's ``booagent`` options; frozen, built once per request) and returns an async context
manager of an :class:`Answer`: the chunks to stream to the client and what was done to choose
them. Strategies that stream one node's reply (route, a named member) enter the pool's stream;
strategies that consult several members (cascade, ensemble, program) *decide* first and return
a :class:`Decision`, whose winner is then replayed. Nothing is written into a record passed
down: every layer returns what it did, and the ``booagent`` object is built from those values.
Keep-alives while a strategy works are the gateway's business (:mod:`gateway.chat`), the same
for every strategy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Any, Literal, Protocol

import msgspec

from backends.base import Backend, ChatRequest, Chunk, Continued, Reply
from backends.errors import AllNodesFailed, BooagentError, NodeError
from backends.tooling import involves_tools
from ensemble.classify import Kind, classify, last_user_text
from ensemble.json_shape import requested_schema, with_schema
from ensemble.tool_select import Selection

StrategyName = Literal["auto", "route", "cascade", "ensemble", "program", "tested"]
Usage = Mapping[str, int]
NO_USAGE: Usage = MappingProxyType({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})


class Options(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The request's own ``booagent`` object (the SDK's ``extra_body``)."""

    strategy: StrategyName | None = None
    members: Annotated[tuple[str, ...], msgspec.Meta(min_length=1)] | None = None
    deadline_ms: Annotated[int, msgspec.Meta(ge=100, le=600_000)] | None = None
    samples: Annotated[int, msgspec.Meta(ge=1, le=8)] | None = None
    explain: bool = False


NO_OPTIONS = Options()


@dataclass(frozen=True, slots=True)
class Context:
    """One chat request as the strategies see it: classified once, never changed. ``tools``
    says it is a tool turn (it offers tools, or carries earlier calls and their results);
    ``selected`` what was kept of many offered tools (:mod:`ensemble.tool_select`)."""

    request: ChatRequest
    kind: Kind
    options: Options = NO_OPTIONS
    tools: bool = False
    selected: Selection | None = None

    @classmethod
    def of(
        cls,
        body: Mapping[str, Any],
        *,
        buffered: bool = False,
        options: Options = NO_OPTIONS,
        selected: Selection | None = None,
        client: str = "",
    ) -> Context:
        """The request classified. A chore is queued behind users' own turns, and one that
        shows the JSON object it wants is asked for it with that object's schema (enforced
        by the nodes' grammar, checked by the cascade)."""
        kind = classify(body)
        priority = 0
        if kind is Kind.CHORE:
            priority = 1
            schema = None if body.get("response_format") else requested_schema(_asked(body))
            body = body if schema is None else with_schema(dict(body), schema)
        request = ChatRequest(body, buffered=buffered, priority=priority, client=client)
        return cls(request, kind, options, involves_tools(body), selected)

    @property
    def body(self) -> Mapping[str, Any]:
        return self.request.body


def _asked(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    return last_user_text(messages if isinstance(messages, list) else [])


def callers_first(members: Sequence[str], callers: Collection[str]) -> tuple[str, ...]:
    """``members`` with those able to call tools first (each group in its order); all of them
    when ``callers`` is empty (no member is marked)."""
    if not callers:
        return tuple(members)
    return (*[m for m in members if m in callers], *[m for m in members if m not in callers])


def added(a: Usage, b: Usage) -> dict[str, int]:
    """Two usages summed, key by key."""
    return {key: int(a.get(key, 0)) + int(b.get(key, 0)) for key in NO_USAGE}


@dataclass(frozen=True, slots=True)
class Call:
    """One member call of a request, as the answer's ``booagent.calls`` shows it."""

    member: str
    node: str | None
    outcome: str
    sample: int = 0
    attempts: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    queue_wait: float = 0.0
    latency: float = 0.0
    tokens: int = 0
    error: str | None = None
    text: str | None = None
    tidied: bool = False
    fitted: tuple[str, ...] = ()
    continued: tuple[Continued, ...] = ()
    """Where the streamed answer was handed on mid-answer (the hand-overs that found a node)."""

    def as_dict(self) -> dict[str, Any]:
        shown: dict[str, Any] = {} if self.text is None else {"text": self.text}
        shown.update(
            member=self.member,
            node=self.node,
            sample=self.sample,
            attempts=len(self.attempts),
            failures=list(self.failures),
            queue_wait_s=round(self.queue_wait, 4),
            latency_s=round(self.latency, 3),
            tokens=self.tokens,
            outcome=self.outcome,
            error=self.error,
        )
        if self.tidied:
            shown["tidied"] = True
        if self.fitted:
            shown["context"] = list(self.fitted)
        if self.continued:
            shown["continued"] = [c.as_dict() for c in self.continued]
        return shown


def node_failures(error: BooagentError) -> list[NodeError]:
    """The failed node attempts behind an error: every attempt of an :class:`AllNodesFailed`,
    the node's own error, none for an error no node gave."""
    if isinstance(error, AllNodesFailed):
        return list(error.failures)
    return [error] if isinstance(error, NodeError) else []


def failure_names(failures: Iterable[NodeError]) -> tuple[str, ...]:
    """Failed node attempts as the ``booagent`` object and the log name them."""
    return tuple(f"{f.node}: {f.reason}" for f in failures)


@dataclass(frozen=True, slots=True)
class Answer:
    """A committed answer: the chunks to stream, and what was done to choose them.

    ``live`` is the node reply being streamed when the answer comes straight from a node
    (route, a named member, a fallback; its call is recorded once the stream ends, with the
    outcome ``live_outcome``), else None: the chunks replay an answer already chosen.
    ``calls`` are the member calls that finished before; ``why`` the decision (steps, votes);
    ``unseen`` the tokens of calls whose text the client does not get, so that ``usage`` counts
    every call the request caused.
    """

    chunks: AsyncIterator[Chunk]
    strategy: str
    live: Reply | None = None
    calls: tuple[Call, ...] = ()
    node: str | None = None
    why: Mapping[str, Any] = field(default_factory=dict)
    unseen: Usage = field(default_factory=lambda: NO_USAGE)
    live_outcome: str = "answered"

    def every_call(self, *, latency: float = 0.0, tokens: int = 0) -> tuple[Call, ...]:
        """Every call of the answer: those that finished before it, then the streamed node
        reply (if there is one) with the ``latency`` and ``tokens`` measured relaying it, its
        attempts and failures counting those after the commit (a node that failed mid-answer,
        the nodes asked to go on with it)."""
        live = self.live
        if live is None:
            return self.calls
        streamed = Call(
            member=live.member,
            node=live.node,
            outcome=self.live_outcome,
            attempts=live.every_attempt,
            failures=failure_names(live.every_failure),
            queue_wait=live.every_queue_wait,
            latency=latency,
            tokens=tokens,
            fitted=live.fitted,
            continued=tuple(c for c in live.continued if c.to is not None),
        )
        return (*self.calls, streamed)


class Strategy(Protocol):
    """Answers a chat request."""

    @property
    def name(self) -> str: ...

    def deliberates(self, ctx: Context) -> bool:
        """True when the strategy consults members before it answers ``ctx`` (a cascade, an
        ensemble, a program): it takes seconds before its first token, so a streaming client
        gets keep-alives meanwhile."""
        ...

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        """The committed answer to ``ctx``, open for the block."""
        ...


@asynccontextmanager
async def streamed(backend: Backend, request: ChatRequest, strategy: str) -> AsyncIterator[Answer]:
    """One node's reply, streamed as it comes (the pool commits at its first token)."""
    async with backend.stream(request) as reply:
        yield Answer(reply.chunks, strategy, live=reply, node=reply.node)
