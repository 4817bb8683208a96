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
from backends.continuation import Prompt
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


ANSWER_STARTS = "<|assistant|>"
"""Where :class:`FakeTemplate`'s prompt ends and the answer begins."""


@dataclass
class FakeNode:
    """A scripted node. ``fail_before`` raises instead of answering; ``fail_after`` raises
    after the first ``fail_at`` words; ``delay`` is per chunk; ``logprob`` is every token's
    log-prob, sent when a request asks for log-probs; ``together`` marks every chunk but the
    last as followed at once by the next (``Chunk.more``), as when a node's chunks arrive in
    one network read; ``kind`` is what its probe says it is.

    Asked to continue an answer (a final ``assistant`` message, or on :meth:`complete` a
    prompt from :class:`FakeTemplate`), it answers the rest of its scripted text after that
    answer; with ``echo`` a prefilled answer is sent back first, merged with the first new
    word, as the native llama-server tested here does."""

    name: str
    reply: ReplyText = "hello"
    fail_before: NodeError | None = None
    fail_after: NodeError | None = None
    fail_at: int = 1
    delay: float = 0.0
    logprob: float | None = None
    together: bool = False
    kind: str = "llama_cpp_server"
    echo: bool = True
    requests: list[ChatRequest] = field(default_factory=list)
    closed: int = 0

    async def probe(self, timeout: float) -> Probe:
        return Probe("ready", kind=self.kind, slots=1)

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

    def complete(self, request: ChatRequest) -> Any:
        return self.stream(request)

    def _words(self, request: ChatRequest) -> list[str]:
        text = self.reply(request) if callable(self.reply) else self.reply
        words = text.split(" ")
        pieces = [words[0], *(f" {word}" for word in words[1:])]
        done = _answered(request.body)
        if done is None:
            return pieces
        rest = [p for p in pieces[len(done.split(" ")) :] if p]
        echoed = self.echo and "prompt" not in request.body
        return [done + rest[0], *rest[1:]] if echoed and rest else rest or [""]

    async def _chunks(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        more = self.together
        yield Chunk({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}, more=more)
        logprobs = self.logprob is not None and bool(request.body.get("logprobs"))
        for i, word in enumerate(self._words(request)):
            await asyncio.sleep(self.delay)
            chunk = content_chunk(word)
            chunk = with_logprob(chunk, self.logprob) if logprobs else chunk
            yield replace(chunk, more=more)
            if self.fail_after is not None and i + 1 >= self.fail_at:
                raise self.fail_after
        yield content_chunk("", finish="stop")

    async def aclose(self) -> None:
        return None


def _answered(body: Mapping[str, Any]) -> str | None:
    """The answer a request asks to continue (None: it asks for a new one)."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt.rpartition(ANSWER_STARTS)[2]
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, Mapping) or last.get("role") != "assistant":
        return None
    return str(last.get("content"))


@dataclass
class FakeTemplate:
    """A member's chat template as the pool sees it: a conversation rendered as its user
    turns, then :data:`ANSWER_STARTS`; ends at ``<|end|>``. ``None`` for a body it
    cannot render (``broken``)."""

    broken: bool = False
    bodies: list[Mapping[str, Any]] = field(default_factory=list)

    async def count(self, body: Mapping[str, Any]) -> int:
        return 0

    async def chat_prompt(self, body: Mapping[str, Any]) -> Prompt | None:
        self.bodies.append(body)
        if self.broken:
            return None
        turns = "".join(str(m.get("content")) for m in body.get("messages") or [])
        return Prompt(turns + ANSWER_STARTS, ("<|end|>",))


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
    templates: Mapping[str, FakeTemplate] | None = None,
) -> Pool:
    """A real :class:`Pool` over fake nodes (capacity 1 each, of the kind they say they are);
    ``hosts`` maps a node's name to the host limit it shares with others; ``templates`` maps
    members to the chat template the pool renders their prompts with."""
    policies = policies or Policies(breaker=Breaker(failures=2, open_seconds=60))
    managed = [
        ManagedNode(
            spec=Node(name=node.name, member=member.name, url=f"fake://{node.name}"),
            member=member,
            backend=node,
            health=HealthTracker(policies.breaker, time.monotonic),
            admission=Admission(1),
            kind=node.kind,
            host=(hosts or {}).get(node.name),
        )
        for node, member in nodes
    ]
    return Pool(managed, policies, rng=random.Random(seed), vocab=templates)


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
