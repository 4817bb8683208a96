"""One member's whole answer, as a candidate for a cascade, an ensemble or a program.

:func:`ask` sends a request to one member through the pool (with its failover and admission)
and collects the whole answer; a failure becomes a candidate with an ``error``, never an
exception, so one member failing never fails a request that others can still answer. A
candidate is a value: a strategy that judges it makes a new one (:meth:`Candidate.judged`,
:meth:`Candidate.retexted`) rather than changing it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from backends.base import Backend, ChatRequest, Chunk
from backends.collect import Accumulator, estimate_prompt_tokens
from backends.errors import BooagentError
from ensemble.base import Call, failure_names, node_failures


@dataclass(frozen=True, slots=True)
class Candidate:
    """A member's answer (or its failure), where it came from, and what it cost.

    ``failure`` is the error that ended the call, kept whole so that a strategy whose every
    call failed answers the client as the pool would (a 503 when every node was busy, the
    node's own 4xx when the request itself was refused).
    """

    member: str
    sample: int = 0
    chunks: tuple[Chunk, ...] = ()
    acc: Accumulator = field(default_factory=Accumulator)
    node: str = ""
    attempts: tuple[str, ...] = ()
    failures: tuple[str, ...] = ()
    queue_wait: float = 0.0
    latency: float = 0.0
    failure: BooagentError | None = None
    outcome: str = "pending"
    tidied: bool = False
    fitted: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None and bool(self.chunks)

    @property
    def error(self) -> str | None:
        return None if self.failure is None else self.failure.message

    @property
    def text(self) -> str:
        return self.acc.text

    @property
    def usage(self) -> dict[str, int]:
        return self.acc.usage()

    def judged(self, outcome: str) -> Candidate:
        """The same answer with the strategy's verdict on it."""
        return replace(self, outcome=outcome)

    def retexted(self, text: str, *, tidied: bool = False) -> Candidate:
        """The same call with another text (a tidied form of its own, or the gateway's own
        answer built from it), keeping its usage."""
        chunks = text_chunks(text, self.usage, self.acc.finish_reason or "stop")
        return replace(self, chunks=chunks, acc=accumulated(chunks, self.acc.prompt_estimate),
                       tidied=tidied or self.tidied)  # fmt: skip

    def without_logprobs(self) -> Candidate:
        """The chunks without log-probs (the gateway asked for them, not the client); the
        accumulator keeps them for the signal."""
        return replace(self, chunks=tuple(_without_logprobs(c) for c in self.chunks))

    def call(self, *, text: bool = False) -> Call:
        """This call, for the answer's ``booagent.calls`` list (with its answer if ``text``)."""
        return Call(
            member=self.member,
            node=self.node or None,
            outcome="failed" if self.failure is not None else self.outcome,
            sample=self.sample,
            attempts=self.attempts,
            failures=self.failures,
            queue_wait=self.queue_wait,
            latency=self.latency,
            tokens=self.usage["completion_tokens"] if self.ok else 0,
            error=self.error,
            text=self.text if text else None,
            tidied=self.tidied,
            fitted=self.fitted,
        )


def accumulated(chunks: tuple[Chunk, ...], prompt_estimate: int = 0) -> Accumulator:
    acc = Accumulator(prompt_estimate=prompt_estimate)
    for chunk in chunks:
        acc.add(chunk)
    return acc


def _request_for(
    request: ChatRequest, member: str, sample: int, sample_temperature: float
) -> ChatRequest:
    """Sample 0 is the request as sent; later samples use another seed and, since greedy
    decoding would repeat sample 0, at least ``sample_temperature``."""
    body: Mapping[str, Any] = request.body
    if sample:
        seed = body.get("seed")
        temperature = body.get("temperature")
        body = {
            **body,
            "seed": (seed if isinstance(seed, int) else 0) + sample,
            "temperature": max(float(temperature or 0), sample_temperature),
        }
    return replace(request, body=body, members=(member,), buffered=True, prefer_idle=False)


async def ask(
    backend: Backend,
    request: ChatRequest,
    member: str,
    sample: int = 0,
    sample_temperature: float = 0.8,
) -> Candidate:
    """The member's whole answer; failures are recorded, not raised (cancellation is)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    ask_for = _request_for(request, member, sample, sample_temperature)
    try:
        async with backend.stream(ask_for) as reply:
            chunks = tuple([chunk async for chunk in reply])
    except BooagentError as exc:
        failed = node_failures(exc)
        return Candidate(
            member,
            sample,
            attempts=tuple(f.node for f in failed),
            failures=failure_names(failed),
            latency=loop.time() - started,
            failure=exc,
        )
    return Candidate(
        member,
        sample,
        chunks,
        accumulated(chunks, reply.prompt_tokens or _estimate(request)),
        node=reply.node,
        attempts=reply.attempts,
        failures=failure_names(reply.failures),
        queue_wait=reply.queue_wait,
        latency=loop.time() - started,
        fitted=reply.fitted,
    )


def _estimate(request: ChatRequest) -> int:
    return estimate_prompt_tokens(request.body.get("messages"), request.body.get("tools"))


def text_chunks(text: str, usage: Mapping[str, int], finish: str = "stop") -> tuple[Chunk, ...]:
    """An answer the gateway wrote (or rewrote) as a stream: the text, then a finishing chunk
    that carries the usage of the calls that produced it."""
    return (
        Chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                            "finish_reason": None}]}),
        Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
               "usage": dict(usage)}),
    )  # fmt: skip


def with_logprobs(request: ChatRequest) -> ChatRequest:
    """The request asking for the answer's token log-probabilities as well."""
    return replace(request, body={**request.body, "logprobs": True})


def _without_logprobs(chunk: Chunk) -> Chunk:
    choices = chunk.data.get("choices")
    if not isinstance(choices, list) or not any(
        isinstance(c, Mapping) and "logprobs" in c for c in choices
    ):
        return chunk
    kept = [
        {k: v for k, v in c.items() if k != "logprobs"} if isinstance(c, Mapping) else c
        for c in choices
    ]
    return Chunk({**chunk.data, "choices": kept})


async def replay(candidate: Candidate) -> AsyncIterator[Chunk]:
    """Stream a finished candidate's chunks to the client."""
    for chunk in candidate.chunks:
        yield chunk
