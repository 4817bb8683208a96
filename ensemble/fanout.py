"""Ensemble: ask several members (and/or several samples of one) at once, then combine.

At the deadline the candidates that finished are combined and the rest are cancelled, which
closes their upstream requests and frees their nodes' slots at once; if none has answered by
then, the first answer to arrive ends the wait. A member failing or timing out never fails
the request while one candidate is left. Samples of one member queue
on a single-slot node, so a member gets more samples than it has slots only when the deadline
leaves room for them (``samples_that_fit``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass

from backends.base import Backend, ChatRequest, Chunk, Served
from backends.errors import AllNodesFailed
from ensemble.base import KEEPALIVE, NO_OPTIONS, Options
from ensemble.candidates import Candidate, ask, replay, settle
from ensemble.checks import Checker
from ensemble.classify import Kind, kind_of
from ensemble.config import EnsembleSettings
from ensemble.vote import combine

Slots = Callable[[str], int]


@dataclass(frozen=True, slots=True)
class Ensemble:
    """The ``ensemble`` strategy."""

    backend: Backend
    settings: EnsembleSettings
    members: tuple[str, ...]
    slots: Slots = lambda _: 1
    keepalive_seconds: float = 2.0
    name: str = "ensemble"

    def plan(self, options: Options, kind: Kind = Kind.GENERAL) -> list[tuple[str, int]]:
        """(member, seed offset) pairs: first samples of every member, then the rest."""
        settings = self.settings
        members = (
            options.members or settings.members_by_kind.get(kind.value) or settings.members
        ) or self.members
        samples = options.samples or self.settings.samples
        if options.samples is None:
            samples = min(samples, max(self.slots(m) for m in members))
        return [(m, i) for i in range(samples) for m in members]

    def __call__(
        self, request: ChatRequest, served: Served, options: Options = NO_OPTIONS
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        """The answer stream; leaving the block cancels whatever is still running."""
        return aclosing(self._run(request, served, options))

    async def _run(
        self, request: ChatRequest, served: Served, options: Options
    ) -> AsyncGenerator[Chunk, None]:
        kind = kind_of(request, served)
        served.strategy = self.name
        plan = self.plan(options, kind)
        temperature = self.settings.sample_temperature
        tasks = [
            asyncio.ensure_future(ask(self.backend, request, m, i, temperature)) for m, i in plan
        ]
        deadline = (options.deadline_ms or self.settings.deadline_ms) / 1000
        try:
            async for beat in self._gather(tasks, deadline):
                yield beat
        finally:
            await _cancel(tasks)
        checker = Checker.of(request.body, kind)
        candidates = [
            checker.tidy(_result(task, member))
            for task, (member, _) in zip(tasks, plan, strict=True)
        ]
        winner = self._decide(candidates, kind, served, checker.faultless, options.explain)
        async for chunk in replay(winner):
            yield chunk

    async def _gather(
        self, tasks: Sequence[asyncio.Future[Candidate]], deadline: float
    ) -> AsyncIterator[Chunk]:
        """Wait until every task is done or the deadline passes; past the deadline, wait on
        only while no candidate has answered yet (the first answer then ends the wait)."""
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        pending = set(tasks)
        while pending and (loop.time() < until or not _any_answered(tasks)):
            wait = max(0.0, min(self.keepalive_seconds, until - loop.time()))
            _, pending = await asyncio.wait(
                pending, timeout=wait or self.keepalive_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if pending and (loop.time() < until or not _any_answered(tasks)):
                yield KEEPALIVE

    def _decide(
        self,
        candidates: list[Candidate],
        kind: Kind,
        served: Served,
        valid: Callable[[Candidate], bool],
        explain: bool,
    ) -> Candidate:
        answered = [c for c in candidates if c.ok]
        if not answered:
            settle(served, candidates, None, texts=explain)
            raise AllNodesFailed("no member of the ensemble answered", failures=[])
        preference = list(dict.fromkeys(c.member for c in candidates))
        verdict = combine(answered, preference, code=kind is Kind.CODE, valid=valid)
        for candidate in answered:
            candidate.outcome = "won" if candidate is verdict.winner else "outvoted"
        settle(served, candidates, verdict.winner, texts=explain)
        served.decision = {
            "strategy": self.name,
            "method": verdict.method,
            "winner": verdict.winner.member,
            "answered": len(answered),
            "asked": len(candidates),
            **verdict.why,
        }
        return verdict.winner


def _any_answered(tasks: Sequence[asyncio.Future[Candidate]]) -> bool:
    return any(t.done() and not t.cancelled() and t.result().ok for t in tasks)


def _result(task: asyncio.Future[Candidate], member: str) -> Candidate:
    if task.cancelled():
        return Candidate(member, error="cancelled at the deadline", outcome="cancelled")
    return task.result()


async def _cancel(tasks: Sequence[asyncio.Future[Candidate]]) -> None:
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
