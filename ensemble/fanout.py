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
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from backends.base import Backend
from backends.errors import BooagentError
from ensemble.base import Answer, Context, Options, callers_first
from ensemble.candidates import Candidate, ask
from ensemble.checks import Checker
from ensemble.classify import Kind
from ensemble.config import EnsembleSettings
from ensemble.decision import Decision, decided
from ensemble.vote import combine

Slots = Callable[[str], int]
_CANCELLED = BooagentError("cancelled at the deadline")


@dataclass(frozen=True, slots=True)
class Ensemble:
    """The ``ensemble`` strategy."""

    backend: Backend
    settings: EnsembleSettings
    members: tuple[str, ...]
    slots: Slots = lambda _: 1
    callers: frozenset[str] = frozenset()
    name: str = "ensemble"

    def deliberates(self, ctx: Context) -> bool:
        return True

    def plan(
        self, options: Options, kind: Kind = Kind.GENERAL, *, tools: bool = False
    ) -> list[tuple[str, int]]:
        """(member, seed offset) pairs: first samples of every member, then the rest. A tool
        turn goes to one member, the first able to call tools: calls are not voted on."""
        settings = self.settings
        members = (
            options.members or settings.members_by_kind.get(kind.value) or settings.members
        ) or self.members
        if tools:
            return [(callers_first(members, self.callers)[0], 0)]
        samples = options.samples or self.settings.samples
        if options.samples is None:
            samples = min(samples, max(self.slots(m) for m in members))
        return [(m, i) for i in range(samples) for m in members]

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        return decided(self.decide(ctx), texts=ctx.options.explain)

    async def decide(self, ctx: Context) -> Decision:
        """Ask every planned (member, sample) at once; at the deadline, combine the answers."""
        plan = self.plan(ctx.options, ctx.kind, tools=ctx.tools)
        temperature = self.settings.sample_temperature
        tasks = [
            asyncio.ensure_future(ask(self.backend, ctx.request, m, i, temperature))
            for m, i in plan
        ]
        try:
            await _gather(tasks, (ctx.options.deadline_ms or self.settings.deadline_ms) / 1000)
        finally:
            await _cancel(tasks)
        checker = Checker.of(ctx.body, ctx.kind)
        candidates = [
            checker.tidy(_result(task, member))
            for task, (member, _) in zip(tasks, plan, strict=True)
        ]
        return self._decide(candidates, ctx.kind, checker)

    def _decide(self, candidates: list[Candidate], kind: Kind, checker: Checker) -> Decision:
        answered = [c for c in candidates if c.ok]
        if not answered:
            return Decision(self.name, tuple(candidates), None, {"strategy": self.name})
        preference = list(dict.fromkeys(c.member for c in candidates))
        verdict = combine(answered, preference, code=kind is Kind.CODE, valid=checker.faultless)
        judged = tuple(
            c.judged("won" if c is verdict.winner else "outvoted") if c.ok else c
            for c in candidates
        )
        winner = next(i for i, c in enumerate(candidates) if c is verdict.winner)
        why = {
            "strategy": self.name,
            "method": verdict.method,
            "winner": verdict.winner.member,
            "answered": len(answered),
            "asked": len(candidates),
            **verdict.why,
        }
        return Decision(self.name, judged, winner, why)


async def _gather(tasks: Sequence[asyncio.Future[Candidate]], deadline: float) -> None:
    """Wait until every task is done or the deadline passes; past the deadline, wait on
    only while no candidate has answered yet (the first answer then ends the wait)."""
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    pending = set(tasks)
    while pending:
        if loop.time() >= until:
            if _any_answered(tasks):
                return
            _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            continue
        _, pending = await asyncio.wait(
            pending, timeout=until - loop.time(), return_when=asyncio.FIRST_COMPLETED
        )


def _any_answered(tasks: Sequence[asyncio.Future[Candidate]]) -> bool:
    return any(t.done() and not t.cancelled() and t.result().ok for t in tasks)


def _result(task: asyncio.Future[Candidate], member: str) -> Candidate:
    if task.cancelled():
        return Candidate(member, failure=_CANCELLED)
    return task.result()


async def _cancel(tasks: Sequence[asyncio.Future[Candidate]]) -> None:
    for task in tasks:
        if not task.done():
            task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
