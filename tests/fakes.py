"""A small fake node implementing the backend seam, for in-process app and strategy tests.

Like simonw/llm's echo model: it answers with a scripted text, one word per chunk, or raises a
scripted error before (or after) the first token. It records every request it was sent.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from backends.admission import Admission
from backends.base import ChatRequest, Chunk, Reply
from backends.collect import Accumulator
from backends.config import Breaker, Member, Node, Policies
from backends.errors import NodeError
from backends.health import HealthTracker
from backends.http import Probe
from backends.node import ManagedNode
from backends.pool import Pool

ReplyText = str | Callable[[ChatRequest], str]


def node_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> Chunk:
    """A chunk as llama.cpp sends it, with the node's own id and model path."""
    return Chunk(
        {
            "id": "chatcmpl-node",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "/models/qwen.gguf",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    )


def tool_fragment(index: int, *, id: str = "", name: str = "", arguments: str = "") -> Chunk:
    """One streamed piece of a tool call, as a node sends it."""
    call: dict[str, Any] = {"index": index, "function": {}}
    if id:
        call |= {"id": id, "type": "function"}
    if name:
        call["function"]["name"] = name
    if arguments:
        call["function"]["arguments"] = arguments
    return node_chunk({"tool_calls": [call]})


def accumulate(*chunks: Chunk, prompt_estimate: int = 0) -> Accumulator:
    """An accumulator that has taken ``chunks``."""
    accumulator = Accumulator(prompt_estimate=prompt_estimate)
    for chunk in chunks:
        accumulator.add(chunk)
    return accumulator


def content_chunk(text: str, finish: str | None = None) -> Chunk:
    delta = {"content": text} if text else {}
    return Chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def with_logprob(chunk: Chunk, logprob: float | None) -> Chunk:
    """The chunk with a token log-prob, as native llama-server sends it."""
    choice = {
        **chunk.choice,
        "logprobs": {"content": [{"token": chunk.content, "logprob": logprob}]},
    }
    return Chunk({"choices": [choice]})


@dataclass
class FakeNode:
    """A scripted node. ``fail_before`` raises instead of answering; ``delay`` is per chunk;
    ``logprob`` is every token's log-prob, sent when a request asks for log-probs; ``together``
    marks every chunk but the last as followed at once by the next (``Chunk.more``), as when a
    node's chunks arrive in one network read."""

    name: str
    reply: ReplyText = "hello"
    fail_before: NodeError | None = None
    fail_after: NodeError | None = None
    delay: float = 0.0
    logprob: float | None = None
    together: bool = False
    requests: list[ChatRequest] = field(default_factory=list)
    closed: int = 0

    async def probe(self, timeout: float) -> Probe:
        return Probe("ready", kind="llama_cpp_server", slots=1)

    async def count_tokens(self, body: Mapping[str, Any]) -> int | None:
        return None

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[Reply]:
        self.requests.append(request)
        if self.fail_before is not None:
            raise self.fail_before
        try:
            yield Reply(self._chunks(request), self.name, "", attempts=(self.name,))
        finally:
            self.closed += 1

    async def _chunks(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        text = self.reply(request) if callable(self.reply) else self.reply
        more = self.together
        yield Chunk({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}, more=more)
        logprobs = self.logprob is not None and bool(request.body.get("logprobs"))
        for i, word in enumerate(text.split(" ")):
            await asyncio.sleep(self.delay)
            chunk = content_chunk(word if i == 0 else f" {word}")
            chunk = with_logprob(chunk, self.logprob) if logprobs else chunk
            yield replace(chunk, more=more)
            if self.fail_after is not None:
                raise self.fail_after
        yield content_chunk("", finish="stop")

    async def aclose(self) -> None:
        return None


@dataclass
class GatedNode(FakeNode):
    """Waits for its ``gate`` to open, before anything (or after its first ``before`` words);
    counts the requests it runs at once."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    before: int = 0
    active: int = 0
    most_active: int = 0

    async def _chunks(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            if not self.before:
                await self.gate.wait()
            words = 0
            async for chunk in super()._chunks(request):
                yield chunk
                words += chunk.is_content
                if chunk.is_content and words == self.before:
                    await self.gate.wait()
        finally:
            self.active -= 1


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``check()`` holds (a test failure after ``timeout`` seconds)."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def fake_pool(
    nodes: Sequence[tuple[FakeNode, Member]],
    policies: Policies | None = None,
    seed: int = 0,
    hosts: Mapping[str, Admission] | None = None,
) -> Pool:
    """A real :class:`Pool` over fake nodes (capacity 1 each); ``hosts`` maps a node's name to
    the host limit it shares with others."""
    policies = policies or Policies(breaker=Breaker(failures=2, open_seconds=60))
    managed = [
        ManagedNode(
            spec=Node(name=node.name, member=member.name, url=f"fake://{node.name}"),
            member=member,
            backend=node,
            health=HealthTracker(policies.breaker, time.monotonic),
            admission=Admission(1),
            host=(hosts or {}).get(node.name),
        )
        for node, member in nodes
    ]
    return Pool(managed, policies, rng=random.Random(seed))


def settings_for(members: Sequence[Member], nodes: Sequence[tuple[str, str]], **extra: Any) -> Any:
    """Settings whose nodes are named like the fakes (URLs unused)."""
    from tests.harness import make_settings

    order = [m.name for m in members]
    return make_settings(
        members=[{"name": m.name, "n_ctx": m.n_ctx, "speed": m.speed} for m in members],
        nodes=[{"name": n, "member": m, "url": f"http://fake/{n}"} for n, m in nodes],
        routes={"general": order, "code": order, "chore": order},
        **extra,
    )
