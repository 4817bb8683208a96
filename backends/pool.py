"""The failover pool: a :class:`backends.base.Backend` made of many nodes.

For each request it picks an eligible node, waits for a slot there, and opens a stream. Until
the first content chunk arrives nothing is committed, so a node that fails before answering is
replaced by another one invisibly. One request-wide budget bounds the attempts, whatever fails;
after the commit point a node failure becomes :class:`backends.errors.StreamInterrupted`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from backends.base import ChatRequest, Chunk, Reply
from backends.config import Member, Node, Policies
from backends.errors import (
    AllNodesFailed,
    ContextLengthExceeded,
    NodeError,
    NodeOverloaded,
    NodeTimeout,
    NoNodeAvailable,
    RequestFailed,
    RetryableNodeError,
    StreamInterrupted,
)
from backends.fit import ESTIMATE, Counter, Fitted, Fitter, NativeCount
from backends.node import ManagedNode
from backends.selection import choose


@dataclass(slots=True)
class Attempts:
    """What one request has tried so far; decides where the next attempt may go. Private to
    one call of :meth:`Pool.stream`, which returns what it holds in the :class:`Reply`."""

    order: list[str] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)
    failures: list[NodeError] = field(default_factory=list)
    min_ctx: int = 0
    retry_after: float = 0.0
    queue_wait: float = 0.0
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    refusals: list[NodeError] = field(default_factory=list)
    """Failures that were the request's own (the node stayed healthy): after one, only other
    nodes of the same member are tried."""
    member: str | None = None

    def start(self, node: ManagedNode) -> None:
        self.order.append(node.name)
        self.tried.add(node.name)

    def refused(self, node: ManagedNode, error: NodeError) -> None:
        """``node`` failed the request inside its answer but is healthy: the request's fault."""
        self.failures.append(error)
        self.refusals.append(error)
        self.member = node.member.name

    def record(self, node: ManagedNode, error: NodeError) -> None:
        self.failures.append(error)
        if isinstance(error, NodeTimeout):
            self.excluded.add(node.name)
        if isinstance(error, ContextLengthExceeded):
            self.min_ctx = node.member.n_ctx + 1
        if isinstance(error, NodeOverloaded) and error.retry_after:
            self.retry_after = max(self.retry_after, error.retry_after)


class Pool:
    """Selection, admission, retries and failover over a set of nodes."""

    name = "pool"

    def __init__(
        self,
        nodes: Sequence[ManagedNode],
        policies: Policies,
        *,
        rng: random.Random | None = None,
        on_close: Callable[[], Awaitable[None]] | None = None,
        vocab: Mapping[str, Counter] | None = None,
        members: Sequence[Member] = (),
    ) -> None:
        self.nodes = list(nodes)
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.members.update({n.member.name: n.member for n in self.nodes})
        self._policies = policies
        self._rng = rng or random.Random()
        self._on_close = on_close
        self._probes: dict[str, asyncio.Task[None]] = {}
        self.spawn: Callable[[Node], ManagedNode] | None = None
        """Makes a managed node for a node that joins while serving (set by the builder)."""
        self._probing = False
        self._vocab = dict(vocab or {})
        contexts = {name: member.n_ctx for name, member in self.members.items()}
        self._fitter = Fitter(contexts, self.counter_for)

    def counter_for(self, member: str) -> Counter:
        """How to count a prompt's tokens on ``member`` now: its GGUF vocabulary when it is on
        this machine, else a ready native llama-server node of it, else an estimate."""
        local = self._vocab.get(member)
        if local is not None:
            return local
        native = [n for n in self.nodes if n.member.name == member and n.kind == "llama_server"]
        ready = [n for n in native if n.health.available()]
        return NativeCount(ready[0].backend.count_tokens) if ready else ESTIMATE

    def eligible(self, request: ChatRequest, state: Attempts) -> list[ManagedNode]:
        """Nodes this request may use now, in no particular order."""
        allowed = {state.member} if state.member else set(request.members) or set(self.members)
        return [
            n
            for n in self.nodes
            if n.member.name in allowed
            and n.member.n_ctx >= state.min_ctx
            and n.name not in state.excluded
            and n.health.available()
        ]

    def member_slots(self, member: str) -> int:
        """How many requests the ready nodes of ``member`` can run side by side (a shared
        host's limit counts once for all its nodes)."""
        ready = [n for n in self.nodes if n.member.name == member and n.health.available()]
        own = sum(n.admission.capacity for n in ready if n.host is None)
        hosts = {id(n.host): n.host for n in ready if n.host is not None}
        shared = sum(
            min(h.capacity, sum(n.admission.capacity for n in ready if n.host is h))
            for h in hosts.values()
        )
        return own + shared

    def cheap_logprobs(self, member: str) -> bool:
        """True when every ready node of ``member`` gives log-probs at no extra cost."""
        ready = [n for n in self.nodes if n.member.name == member and n.health.available()]
        return bool(ready) and all(n.cheap_logprobs for n in ready)

    def has_capacity(self, members: Sequence[str]) -> bool:
        """True when a node of one of these members could take a request."""
        return bool(self.eligible(ChatRequest({}, tuple(members)), Attempts()))

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[Reply]:
        """The first attempt that reaches its commit point, held open for the block.

        The request goes only to members whose context holds its prompt (the others are named
        in the reply's ``fitted``), with ``max_tokens`` clamped to what is left of the
        context; :class:`backends.errors.PromptTooLong` when no member can hold it."""
        fitted = await self._fitter.fit(request.body, request.members)
        if fitted.skipped:
            request = replace(request, members=fitted.members)
        reply, held = await self._commit(request, fitted)
        async with held:
            yield reply

    async def _commit(self, request: ChatRequest, fitted: Fitted) -> tuple[Reply, AsyncExitStack]:
        state = Attempts()
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._policies.retry.attempts),
            retry=retry_if_exception(lambda exc: self._retryable(exc, request, state)),
            wait=lambda _: self._wait(request, state),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(request, fitted, state)
        except RetryableNodeError as exc:
            if state.refusals:
                raise _request_failed(state) from exc
            raise _all_failed(state) from exc
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _retryable(self, exc: BaseException, request: ChatRequest, state: Attempts) -> bool:
        if state.refusals:  # another node of the member, once: twice is the request's fault
            return len(state.refusals) < 2 and any(
                n.name not in state.tried for n in self.eligible(request, state)
            )
        if isinstance(exc, ContextLengthExceeded):
            return bool(self.eligible(request, state))
        return isinstance(exc, RetryableNodeError)

    def _wait(self, request: ChatRequest, state: Attempts) -> float:
        """No wait when an untried node is left; else honour the node's Retry-After."""
        if any(n.name not in state.tried for n in self.eligible(request, state)):
            return 0.0
        return min(state.retry_after, self._policies.retry.max_retry_after)

    async def _attempt(
        self, request: ChatRequest, fitted: Fitted, state: Attempts
    ) -> tuple[Reply, AsyncExitStack]:
        """One node, to its commit point. Returns the reply and what holds it open (the slot,
        the node's response, the relay), which the caller owns from then on."""
        node = self._select(request, state)
        state.start(node)
        member = node.member.name
        body = fitted.body_for(request.body, member)
        notes = fitted.skipped
        if body is not request.body:
            asked, kept = request.body.get("max_tokens"), body["max_tokens"]
            notes += (f"{member}: max_tokens {asked} clamped to {kept}",)
        request = replace(request, body=body, prompt_tokens=fitted.prompt_tokens(member))
        node.health.claim()
        async with AsyncExitStack() as stack:
            stack.callback(node.health.release)
            state.queue_wait += await self._admit(node, request, stack)
            loop = asyncio.get_running_loop()
            started = loop.time()
            try:
                reply = await stack.enter_async_context(node.backend.stream(request))
                head, first = await _until_commit(reply.chunks, whole=request.buffered)
            except NodeError as exc:
                await self._failed(node, exc, state)
                raise
            relay = _relay(node, reply.chunks, head, started, first - started)
            await stack.enter_async_context(aclosing(relay))
            committed = Reply(
                relay,
                node.name,
                node.member.name,
                attempts=tuple(state.order),
                failures=tuple(state.failures),
                queue_wait=state.queue_wait,
                started=state.started,
                first_token=first - started,
                fitted=notes,
                prompt_tokens=request.prompt_tokens,
            )
            return committed, stack.pop_all()

    def _select(self, request: ChatRequest, state: Attempts) -> ManagedNode:
        eligible = self.eligible(request, state)
        if not eligible:
            if state.failures:
                raise _all_failed(state)
            raise NoNodeAvailable(
                f"no ready node for {', '.join(request.members) or 'any member'}", retry_after=2
            )
        return choose(eligible, request, state.tried, self._rng)

    async def _admit(self, node: ManagedNode, request: ChatRequest, stack: AsyncExitStack) -> float:
        """A slot on the node's host (when it has a limit), then on the node: always in that
        order, so two requests never wait for each other. One queue time limit for both.
        Returns the seconds waited."""
        loop = asyncio.get_running_loop()
        waited = loop.time()
        limit = waited + self._policies.timeouts.queue
        turn = (request.priority, request.client)
        if node.host is not None:
            await stack.enter_async_context(node.host.slot(limit - loop.time(), *turn))
        left = max(0.0, limit - loop.time())
        await stack.enter_async_context(node.admission.slot(left, *turn))
        return loop.time() - waited

    async def _failed(self, node: ManagedNode, exc: NodeError, state: Attempts) -> None:
        """Record a failed attempt; a node fault counts toward the node's breaker, the
        request's own does not (one that failed inside the answer of a node whose health
        check passes right after)."""
        if exc.inside_answer and await self._healthy(node):
            state.refused(node, exc)
            return
        state.record(node, exc)
        if isinstance(exc, RetryableNodeError):
            node.health.failed(f"{exc.reason}: {exc.message}")
            node.stats.failed += 1

    async def _healthy(self, node: ManagedNode) -> bool:
        probe = await node.backend.probe(self._policies.health.timeout)
        return probe.state == "ready"

    def start_probes(self) -> None:
        """Probe every node now and then, in the background, until :meth:`aclose`."""
        self._probing = True
        for node in self.nodes:
            self._probes[node.name] = asyncio.create_task(self._probe_loop(node))

    async def add(self, node: ManagedNode) -> None:
        """A node that joined while serving (one a node agent announced): probed once, then
        eligible like the others. Its member must be one of the pool's."""
        if node.member.name not in self.members:
            raise ValueError(f"node {node.name}: unknown member {node.member.name}")
        if any(n.name == node.name for n in self.nodes):
            raise ValueError(f"node {node.name} is already in the pool")
        await self._probe_once(node)
        self.nodes = [*self.nodes, node]
        if self._probing:
            self._probes[node.name] = asyncio.create_task(self._probe_loop(node))

    async def remove(self, name: str) -> ManagedNode | None:
        """Take a node out of the pool: no new request goes to it; requests it is answering
        carry on (or fail over, as when a node dies). Returns it, or None if unknown."""
        node = next((n for n in self.nodes if n.name == name), None)
        if node is None:
            return None
        self.nodes = [n for n in self.nodes if n.name != name]
        task = self._probes.pop(name, None)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return node

    async def probe_all(self) -> None:
        """Probe every node once (used at start-up and by tests)."""
        await asyncio.gather(*(self._probe_once(n) for n in self.nodes))

    async def _probe_once(self, node: ManagedNode) -> None:
        node.apply_probe(await node.backend.probe(self._policies.health.timeout))

    async def _probe_loop(self, node: ManagedNode) -> None:
        while True:
            await self._probe_once(node)
            await asyncio.sleep(self._policies.health.interval)

    def snapshot(self) -> list[dict[str, Any]]:
        return [n.snapshot() for n in self.nodes]

    async def aclose(self) -> None:
        self._probing = False
        for task in self._probes.values():
            task.cancel()
        await asyncio.gather(*self._probes.values(), return_exceptions=True)
        self._probes.clear()
        if self._on_close is not None:
            await self._on_close()


def _request_failed(state: Attempts) -> RequestFailed:
    last = state.refusals[-1]
    nodes = len(state.refusals)
    return RequestFailed(
        last.node,
        f"failed this request while staying healthy ({last.message.split(': ', 1)[-1]}), "
        f"on {nodes} node{'s' if nodes > 1 else ''}: the request may not fit the model's "
        "context or use something its chat template or grammar cannot handle",
    )


def _all_failed(state: Attempts) -> AllNodesFailed:
    reasons = "; ".join(f.message for f in state.failures) or "no node could be tried"
    return AllNodesFailed(
        f"all {len(state.failures)} attempts failed: {reasons}", failures=state.failures
    )


async def _until_commit(chunks: AsyncIterator[Chunk], *, whole: bool) -> tuple[list[Chunk], float]:
    """Read up to and including the first content chunk (or, if ``whole``, to the end).
    Returns the chunks read and the loop time at which the first content chunk arrived (the
    time the reading ended, if none did)."""
    loop = asyncio.get_running_loop()
    head: list[Chunk] = []
    first: float | None = None
    async for chunk in chunks:
        head.append(chunk)
        if chunk.is_content and first is None:
            first = loop.time()
            if not whole:
                break
    return head, loop.time() if first is None else first


async def _relay(
    node: ManagedNode, chunks: AsyncIterator[Chunk], head: list[Chunk], started: float, ttft: float
) -> AsyncGenerator[Chunk, None]:
    """The committed stream: replays the head, relays the rest, then scores the node."""
    tokens = 0
    try:
        for chunk in head:
            tokens += chunk.is_content
            yield chunk
        async for chunk in chunks:
            tokens += chunk.is_content
            yield chunk
    except NodeError as exc:
        node.health.failed(f"{exc.reason}: {exc.message}")
        node.stats.failed += 1
        raise StreamInterrupted(
            f"node {node.name} failed after the answer began: {exc.message}"
        ) from exc
    node.health.succeeded()
    node.stats.record(ttft, tokens, asyncio.get_running_loop().time() - started)
