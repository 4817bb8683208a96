"""Cascade: try the cheapest suitable member first, escalate when a cheap signal says no.

Score, then decide: each step's answer gets a :class:`Signal` (valid code, valid JSON, valid
tool arguments; its token log-probabilities, on nodes that give them cheaply; or agreement
between two samples of that step); an answer whose signal passes
is streamed, otherwise the next, stronger member is asked. The last step is always accepted,
and if it fails the best earlier answer is used. Then an answer a checker faults (a broken
instruction, invalid JSON or code; :mod:`ensemble.checks`) is mended: asked again under a
grammar that enforces its instructions when one can (``constrain``), else with ``resample``
fresh samples from its member and then with ``repair`` one request naming the faults
(:mod:`ensemble.repair`); a try with fewer faults replaces it. Every answer is first tidied
where a broken instruction needs no model to fix (lowercased, a code fence unwrapped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Backend, ChatRequest, Chunk, Served
from backends.errors import AllNodesFailed
from ensemble.base import NO_OPTIONS, Options, keepalives
from ensemble.candidates import Candidate, ask, drop_logprobs, replay, settle, with_logprobs
from ensemble.checks import Checker
from ensemble.classify import Kind, kind_of
from ensemble.config import CascadeSettings
from ensemble.repair import repair_request
from ensemble.signals import confidence, short_form, similarity


@dataclass(frozen=True, slots=True)
class Signal:
    """Whether to accept an answer, which signal said so, and its score."""

    accept: bool
    name: str
    score: float | None = None


def structural_signal(candidate: Candidate, checker: Checker) -> Signal | None:
    """The checkers' verdict (tools, JSON format, code, instructions) when one applies."""
    found = checker.verdict(candidate)
    if not found.checked:
        return None
    return Signal(found.passed, found.decided_by, 1.0 if found.passed else 0.0)


def agreement(a: Candidate, b: Candidate) -> float:
    """1 when two short answers are equal, else the similarity of the two texts."""
    ka, kb = short_form(a.text), short_form(b.text)
    if ka is not None and kb is not None:
        return 1.0 if ka == kb else 0.0
    return similarity(a.text, b.text)


@dataclass(frozen=True, slots=True)
class Cascade:
    """The ``cascade`` strategy."""

    backend: Backend
    settings: CascadeSettings
    members: tuple[str, ...]
    keepalive_seconds: float = 2.0
    cheap_logprobs: Callable[[str], bool] = lambda _: False
    name: str = "cascade"

    def ladder(self, kind: Kind, options: Options) -> tuple[str, ...]:
        if options.members:
            return options.members
        ladders = self.settings.ladders
        return ladders.get(kind.value) or ladders.get("default") or self.members

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
        ladder = self.ladder(kind, options)
        checker = Checker.of(request.body, kind)
        tried: list[Candidate] = []
        steps: list[dict[str, Any]] = []
        for step, member in enumerate(ladder):
            last = step == len(ladder) - 1
            async for beat in self._step(request, member, checker, tried, steps, last):
                yield beat
            if steps[-1]["accepted"]:
                break
        escalations = len(steps) - 1
        winner = _winner(tried)
        if winner is not None:
            async for beat in self._mend(request, checker, winner, tried, steps):
                yield beat
            winner = _winner(tried)
        settle(served, tried, winner, texts=options.explain)
        served.decision = {"strategy": self.name, "steps": steps, "escalations": escalations}
        if winner is None:
            raise AllNodesFailed("every member of the cascade failed", failures=[])
        async for chunk in replay(winner):
            yield chunk

    async def _step(
        self,
        request: ChatRequest,
        member: str,
        checker: Checker,
        tried: list[Candidate],
        steps: list[dict[str, Any]],
        last: bool,
    ) -> AsyncIterator[Chunk]:
        """Ask one member (twice if agreement decides) and record the verdict."""
        confident = self._judged_by_confidence(member, checker, last)
        asked = with_logprobs(request) if confident else request
        task = asyncio.ensure_future(ask(self.backend, asked, member))
        async for beat in self._waiting(task):
            yield beat
        first = checker.tidy(task.result())
        tried.append(first)
        signal = self._signal(first, checker, last)
        if signal is None and confident:
            signal = self._confidence(first, request)
        if signal is None:
            second_task = asyncio.ensure_future(
                ask(self.backend, request, member, 1, self.settings.sample_temperature)
            )
            async for beat in self._waiting(second_task):
                yield beat
            second = second_task.result()
            tried.append(second)
            score = agreement(first, second) if second.ok else 0.0
            signal = Signal(score >= self.settings.agreement, "agreement", round(score, 3))
        first.outcome = "accepted" if signal.accept else "escalated"
        steps.append({"member": member, "signal": signal.name, "score": signal.score,
                      "accepted": signal.accept})  # fmt: skip

    async def _mend(
        self,
        request: ChatRequest,
        checker: Checker,
        winner: Candidate,
        tried: list[Candidate],
        steps: list[dict[str, Any]],
    ) -> AsyncIterator[Chunk]:
        """A faulted answer gets ``resample`` fresh samples of the request, then (with
        ``repair``) one request naming its faults; a try with fewer faults replaces it."""
        best, found = winner, _faults(winner, checker)
        grammar = checker.grammar if found and self.settings.constrain else None
        for how in self._mending(grammar):
            if not found:
                return
            ask_for, sample = self._mend_request(how, request, grammar, best, found, tried)
            task = asyncio.ensure_future(
                ask(self.backend, ask_for, best.member, sample, self.settings.sample_temperature)
            )
            async for beat in self._waiting(task):
                yield beat
            fixed = checker.tidy(task.result())
            tried.append(fixed)
            left = _faults(fixed, checker) if fixed.ok else found
            better = fixed.ok and len(left) < len(found)
            fixed.outcome = "accepted" if better else "rejected"
            steps.append({"member": best.member, "signal": how, "score": None,
                          "problems": found, "left": left, "accepted": better})  # fmt: skip
            if better:
                best.outcome = {"repair": "repaired", "constrain": "constrained"}.get(
                    how, "resampled"
                )
                best, found = fixed, left

    def _judged_by_confidence(self, member: str, checker: Checker, last: bool) -> bool:
        """Log-probs decide a step only where they cost nothing (``cheap_logprobs``: native
        llama-server nodes; ``llama_cpp.server`` runs about 6x slower with them) and nothing
        else can judge the answer."""
        wanted = self.settings.confidence is not None and not last and not checker.judges_form
        return wanted and self.cheap_logprobs(member)

    def _confidence(self, candidate: Candidate, request: ChatRequest) -> Signal | None:
        """Accept when the answer's mean token probability reaches ``confidence``; None when
        the node sent no log-probs (agreement decides then). Log-probs the client did not
        ask for are dropped from the answer."""
        score = confidence(candidate.acc.logprobs) if candidate.ok else None
        if not request.body.get("logprobs"):
            drop_logprobs(candidate)
        if score is None or self.settings.confidence is None:
            return None
        return Signal(score >= self.settings.confidence, "confidence", round(score, 3))

    def _mending(self, grammar: str | None) -> list[str]:
        """A grammar, when one enforces the request's instructions, is the one sure fix;
        otherwise fresh samples, then the repair."""
        if grammar:
            return ["constrain"]
        return ["resample"] * self.settings.resample + ["repair"] * self.settings.repair

    def _mend_request(
        self,
        how: str,
        request: ChatRequest,
        grammar: str | None,
        best: Candidate,
        found: list[str],
        tried: list[Candidate],
    ) -> tuple[ChatRequest, int]:
        """What a mending try asks, and its sample number (0: the request's own seed)."""
        if how == "constrain":
            return replace(request, body={**request.body, "grammar": grammar}), 0
        if how == "repair":
            return repair_request(request, best, found), 0
        return request, sum(c.member == best.member for c in tried)

    def _signal(self, candidate: Candidate, checker: Checker, last: bool) -> Signal | None:
        if not candidate.ok:
            return Signal(False, "failed")
        if last:
            return Signal(True, "last_step")
        structural = structural_signal(candidate, checker)
        if structural is not None or self.settings.check_agreement:
            return structural
        return Signal(True, "unchecked")

    async def _waiting(self, task: asyncio.Future[Candidate]) -> AsyncIterator[Chunk]:
        try:
            async for beat in keepalives(task, self.keepalive_seconds):
                yield beat
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _faults(candidate: Candidate, checker: Checker) -> list[str]:
    """What the checkers find wrong that a repair could fix (nothing for a tool call)."""
    found = checker.verdict(candidate)
    return list(found.faults) if found.repairable else []


def _winner(tried: Sequence[Candidate]) -> Candidate | None:
    """The last accepted answer, else the strongest member's answer that was not rejected."""
    answered = [c for c in tried if c.ok and c.outcome != "rejected"]
    accepted = [c for c in answered if c.outcome == "accepted"]
    if accepted:
        return accepted[-1]
    return answered[-1] if answered else None
