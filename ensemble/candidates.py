"""One member's whole answer, as a candidate for a cascade or an ensemble.

:func:`ask` sends a request to one member through the pool (with its failover and admission)
and collects the whole answer; a failure becomes a candidate with an ``error``, never an
exception, so one member failing never fails a request that others can still answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from backends.base import Backend, ChatRequest, Chunk, Served
from backends.collect import Accumulator, estimate_prompt_tokens
from backends.errors import BooagentError


@dataclass(slots=True)
class Candidate:
    """A member's answer (or its failure) and what it cost."""

    member: str
    sample: int = 0
    chunks: list[Chunk] = field(default_factory=list)
    node: str = ""
    latency: float = 0.0
    error: str | None = None
    acc: Accumulator = field(default_factory=Accumulator)
    outcome: str = "pending"
    tidied: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.chunks)

    @property
    def text(self) -> str:
        return self.acc.text

    @property
    def usage(self) -> dict[str, int]:
        return self.acc.usage()

    def record(self, *, text: bool = False) -> dict[str, Any]:
        """This call, for the answer's ``booagent.calls`` list (with its answer if ``text``)."""
        extra = {"text": self.text} if text else {}
        return {
            **extra,
            "member": self.member,
            "node": self.node or None,
            "sample": self.sample,
            "latency_s": round(self.latency, 3),
            "tokens": self.usage["completion_tokens"] if self.ok else 0,
            "outcome": self.outcome if self.error is None else "failed",
            "error": self.error,
            **({"tidied": True} if self.tidied else {}),
        }


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
    served = Served()
    prompt = estimate_prompt_tokens(request.body.get("messages"))
    candidate = Candidate(member, sample, acc=Accumulator(prompt_estimate=prompt))
    ask_for = _request_for(request, member, sample, sample_temperature)
    try:
        async with backend.stream(ask_for, served) as chunks:
            async for chunk in chunks:
                candidate.chunks.append(chunk)
                candidate.acc.add(chunk)
    except BooagentError as exc:
        candidate.error = exc.message
    candidate.node = served.node
    candidate.latency = loop.time() - started
    return candidate


def text_chunks(text: str, usage: Mapping[str, int], finish: str = "stop") -> list[Chunk]:
    """An answer the gateway wrote (or rewrote) as a stream: the text, then a finishing chunk
    that carries the usage of the calls that produced it."""
    return [
        Chunk({"choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                            "finish_reason": None}]}),
        Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}],
               "usage": dict(usage)}),
    ]  # fmt: skip


def with_logprobs(request: ChatRequest) -> ChatRequest:
    """The request asking for the answer's token log-probabilities as well."""
    return replace(request, body={**request.body, "logprobs": True})


def drop_logprobs(candidate: Candidate) -> None:
    """Remove log-probs from the candidate's chunks (the gateway asked for them, not the
    client); the accumulator keeps them for the signal."""
    candidate.chunks = [_without_logprobs(chunk) for chunk in candidate.chunks]


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


def retext(candidate: Candidate, text: str) -> None:
    """Give the candidate another text (a tidied form of its own), keeping its usage."""
    chunks = text_chunks(text, candidate.usage, candidate.acc.finish_reason or "stop")
    acc = Accumulator(prompt_estimate=candidate.acc.prompt_estimate)
    for chunk in chunks:
        acc.add(chunk)
    candidate.chunks, candidate.acc = chunks, acc


async def replay(candidate: Candidate) -> AsyncIterator[Chunk]:
    """Stream a finished candidate's chunks to the client."""
    for chunk in candidate.chunks:
        yield chunk


def settle(
    served: Served, candidates: list[Candidate], winner: Candidate | None, *, texts: bool = False
) -> None:
    """Record every call; tokens of the calls the client does not see go to extra usage."""
    served.calls.extend(c.record(text=texts) for c in candidates)
    for candidate in candidates:
        if candidate is not winner and candidate.ok:
            served.add_usage(candidate.usage)
    if winner is not None:
        served.node, served.member = winner.node, winner.member
