"""The failover pool: a :class:`backends.base.Backend` made of many nodes.

For each request it picks an eligible node, waits for a slot there, and opens a stream. Until
the first content chunk arrives nothing is committed, so a node that fails before answering is
replaced by another one invisibly. One request-wide budget bounds the attempts, whatever fails.
After the commit point a node that fails mid-answer hands its plain-text answer on to another
node of the same member, within the same budget (:mod:`backends.continuation`); when none can
take it, the failure becomes :class:`backends.errors.StreamInterrupted`.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import replace
from functools import partial
from typing import Any

from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

from backends.attempts import Attempts
from backends.base import ChatRequest, Continued, Reply
from backends.config import Member, Node, Policies
from backends.continuation import (
    MAX_CONTINUATIONS,
    Continuation,
    Partial,
    Template,
    continuable,
)
from backends.errors import (
    AllNodesFailed,
    CapacityError,
    ContextLengthExceeded,
    NodeError,
    NoNodeAvailable,
    RequestFailed,
    RetryableNodeError,
    StreamInterrupted,
)
from backends.fit import ESTIMATE, Counter, Fitted, Fitter, NativeCount
from backends.node import ManagedNode, Pace
from backends.relay import Leg, relay, until_commit
from backends.selection import choose


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
        spawn: Callable[[Node], ManagedNode] | None = None,
    ) -> None:
        self.nodes = list(nodes)
        self.members: dict[str, Member] = {m.name: m for m in members}
        self.members.update({n.member.name: n.member for n in self.nodes})
        self._policies = policies
        self._rng = rng or random.Random()
        self._on_close = on_close
        self._probes: dict[str, asyncio.Task[None]] = {}
        self.spawn = spawn
        """Makes a managed node for a node that joins while serving."""
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

    def member_pace(self, member: str) -> Pace | None:
        """The pace of the fastest ready node of ``member`` that has answered (None: none
        has yet)."""
        ready = [n for n in self.nodes if n.member.name == member and n.health.available()]
        paces = [p for p in (Pace.of(n.stats) for n in ready) if p is not None]
        return max(paces, key=lambda p: p.tokens_per_second, default=None)

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
        leg = await self._open(node, request, state)
        continued: list[Continued] = []
        resume = partial(self._resume, request, state, continued)
        async with AsyncExitStack() as held:
            held.push_async_exit(leg.held)
            relayed = relay(leg, resume, body.get("max_tokens"))
            await held.enter_async_context(aclosing(relayed))
            committed = Reply(
                relayed,
                node.name,
                node.member.name,
                attempts=tuple(state.order),
                failures=tuple(state.failures),
                queue_wait=state.queue_wait,
                started=state.started,
                first_token=leg.ttft,
                fitted=notes,
                prompt_tokens=request.prompt_tokens,
                continued=continued,
            )
            return committed, held.pop_all()

    async def _open(
        self,
        node: ManagedNode,
        request: ChatRequest,
        state: Attempts,
        ask: AbstractAsyncContextManager[Reply] | None = None,
    ) -> Leg:
        """``node``'s answer to ``request`` (asked by ``ask``, if given) up to its commit point:
        its first content, or its end for a buffered request. A failure is recorded, then
        raised."""
        node.health.claim()
        async with AsyncExitStack() as stack:
            stack.callback(node.health.release)
            waited = await self._admit(node, request, stack)
            state.queue_wait += waited
            started = asyncio.get_running_loop().time()
            try:
                reply = await stack.enter_async_context(ask or node.backend.stream(request))
                head, first = await until_commit(reply.chunks, whole=request.buffered)
            except NodeError as exc:
                await self._failed(node, exc, state)
                raise
            held = stack.pop_all()
        return Leg(node, reply.chunks, head, held, started, first - started,
                   request.prompt_tokens, waited)  # fmt: skip

    async def _resume(
        self, request: ChatRequest, state: Attempts, continued: list[Continued], failed: Leg,
        partial: Partial, error: NodeError,
    ) -> Leg:  # fmt: skip
        """The rest of a committed answer whose node failed: another node of its member goes
        on from the answer so far, within the request's attempts. Records what happened in
        ``continued``; :class:`StreamInterrupted` when the answer may not be continued (not
        plain text, or handed on too often) or no node can take it."""
        node = failed.node
        state.member = node.member.name
        state.excluded.add(node.name)
        order, failures, waited = len(state.order), len(state.failures), state.queue_wait
        leg = None
        if partial.plain and continuable(request.body) and len(continued) < MAX_CONTINUATIONS:
            asked = await Continuation.of(request, partial, self._template(request, state))
            leg = await self._sibling(asked, state)
        to = None if leg is None else leg.node.name
        continued.append(Continued(
            error, len(partial.text), to, tuple(state.order[order:]),
            tuple(state.failures[failures:]), state.queue_wait - waited,
        ))  # fmt: skip
        if leg is None:
            raise StreamInterrupted(
                f"node {node.name} failed after the answer began: {error.message}"
            ) from error
        return leg

    def _template(self, request: ChatRequest, state: Attempts) -> Template | None:
        """The member's chat template, when a ``llama_cpp.server`` node may take the answer."""
        template = self._vocab.get(state.member or "")
        kinds = {n.kind for n in self.eligible(request, state)}
        return template if isinstance(template, Template) and "llama_cpp_server" in kinds else None

    async def _sibling(self, asked: Continuation, state: Attempts) -> Leg | None:
        """The first node that takes up the answer (each try is one of the request's
        attempts); None when no node is left that can be asked, or the budget is spent."""
        request = asked.prefilled
        while len(state.order) < self._policies.retry.attempts:
            able = [n for n in self.eligible(request, state) if asked.serves(n.kind)]
            if not able:
                return None
            node = choose(able, request, state.tried, self._rng)
            state.start(node)
            try:
                return await self._open(node, request, state, asked.ask(node))
            except NodeError as exc:
                state.excluded.add(node.name)
                if not isinstance(exc, RetryableNodeError):
                    return None
            except CapacityError:
                return None
        return None

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
