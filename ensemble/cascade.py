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

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Backend, ChatRequest
from backends.errors import ContextLengthExceeded, NodeRejected
from ensemble.base import Answer, Context, Options
from ensemble.candidates import Candidate, ask, with_logprobs
from ensemble.checks import Checker
from ensemble.classify import Kind
from ensemble.config import CascadeSettings
from ensemble.decision import Decision, decided
from ensemble.repair import repair_request
from ensemble.signals import confidence, short_form, similarity

Step = dict[str, Any]
_MENDED = {"repair": "repaired", "constrain": "constrained", "resample": "resampled"}


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
    cheap_logprobs: Callable[[str], bool] = lambda _: False
    callers: frozenset[str] = frozenset()
    name: str = "cascade"

    def deliberates(self, ctx: Context) -> bool:
        return True

    def ladder(self, kind: Kind, options: Options, *, tools: bool = False) -> tuple[str, ...]:
        """The members to climb, cheapest first; for a tool turn only those able to call
        tools (all of them if none is)."""
        if options.members:
            return options.members
        ladders = self.settings.ladders
        ladder = ladders.get(kind.value) or ladders.get("default") or self.members
        if tools and self.callers:
            return tuple(m for m in ladder if m in self.callers) or ladder
        return ladder

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        return decided(self.decide(ctx), texts=ctx.options.explain)

    async def decide(self, ctx: Context) -> Decision:
        """Climb the ladder until a step is accepted, then mend the winner if it is faulted.
        A member that refuses the request itself (a 4xx other than its context being too
        small) ends the climb: a stronger member would refuse it too."""
        ladder = self.ladder(ctx.kind, ctx.options, tools=ctx.tools)
        checker = Checker.of(ctx.body, ctx.kind)
        tried: list[Candidate] = []
        steps: list[Step] = []
        for index, member in enumerate(ladder):
            asked, step = await self._step(ctx.request, member, checker, index == len(ladder) - 1)
            tried += asked
            steps.append(step)
            if step["accepted"] or _refused(asked[0]):
                break
        escalations = len(steps) - 1
        winner = _winner(tried)
        if winner is not None:
            tried, mended = await self._mend(ctx.request, checker, tried, winner)
            steps += mended
            winner = _winner(tried)
        why = {"strategy": self.name, "steps": steps, "escalations": escalations}
        return Decision(self.name, tuple(tried), winner, why)

    async def _step(
        self, request: ChatRequest, member: str, checker: Checker, last: bool
    ) -> tuple[list[Candidate], Step]:
        """Ask one member (twice if agreement decides): its answers, judged, and the step."""
        confident = self._judged_by_confidence(member, checker, last)
        first = checker.tidy(
            await ask(self.backend, with_logprobs(request) if confident else request, member)
        )
        signal = self._signal(first, checker, last)
        if signal is None and confident:
            signal, first = self._confidence(first, request)
        more: list[Candidate] = []
        if signal is None:
            second = await ask(self.backend, request, member, 1, self.settings.sample_temperature)
            more.append(second)
            score = agreement(first, second) if second.ok else 0.0
            signal = Signal(score >= self.settings.agreement, "agreement", round(score, 3))
        first = first.judged("accepted" if signal.accept else "escalated")
        step = {"member": member, "signal": signal.name, "score": signal.score,
                "accepted": signal.accept}  # fmt: skip
        return [first, *more], step

    async def _mend(
        self, request: ChatRequest, checker: Checker, tried: list[Candidate], winner: int
    ) -> tuple[list[Candidate], list[Step]]:
        """A faulted answer gets ``resample`` fresh samples of the request, then (with
        ``repair``) one request naming its faults; a try with fewer faults replaces it.
        Returns every call so far, judged again, and the mending steps."""
        tried, steps = list(tried), []
        best, found = winner, _faults(tried[winner], checker)
        grammar = checker.grammar if found and self.settings.constrain else None
        for how in self._mending(grammar):
            if not found:
                break
            ask_for, sample = self._mend_request(how, request, grammar, tried, best, found)
            fixed = checker.tidy(
                await ask(self.backend, ask_for, tried[best].member, sample,
                          self.settings.sample_temperature)
            )  # fmt: skip
            left = _faults(fixed, checker) if fixed.ok else found
            better = fixed.ok and len(left) < len(found)
            tried.append(fixed.judged("accepted" if better else "rejected"))
            steps.append({"member": fixed.member, "signal": how, "score": None,
                          "problems": found, "left": left, "accepted": better})  # fmt: skip
            if better:
                tried[best] = tried[best].judged(_MENDED[how])
                best, found = len(tried) - 1, left
        return tried, steps

    def _judged_by_confidence(self, member: str, checker: Checker, last: bool) -> bool:
        """Log-probs decide a step only where they cost nothing (``cheap_logprobs``: native
        llama-server nodes; ``llama_cpp.server`` runs about 6x slower with them) and nothing
        else can judge the answer."""
        wanted = self.settings.confidence is not None and not last and not checker.judges_form
        return wanted and self.cheap_logprobs(member)

    def _confidence(
        self, candidate: Candidate, request: ChatRequest
    ) -> tuple[Signal | None, Candidate]:
        """Accept when the answer's mean token probability reaches ``confidence``; None when
        the node sent no log-probs (agreement decides then). Log-probs the client did not
        ask for are dropped from the answer."""
        score = confidence(candidate.acc.logprobs) if candidate.ok else None
        if not request.body.get("logprobs"):
            candidate = candidate.without_logprobs()
        if score is None or self.settings.confidence is None:
            return None, candidate
        return Signal(score >= self.settings.confidence, "confidence", round(score, 3)), candidate

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
        tried: Sequence[Candidate],
        best: int,
        found: list[str],
    ) -> tuple[ChatRequest, int]:
        """What a mending try asks, and its sample number (0: the request's own seed)."""
        if how == "constrain":
            return replace(request, body={**request.body, "grammar": grammar}), 0
        if how == "repair":
            return repair_request(request, tried[best], found), 0
        return request, sum(c.member == tried[best].member for c in tried)

    def _signal(self, candidate: Candidate, checker: Checker, last: bool) -> Signal | None:
        if not candidate.ok:
            return Signal(False, "failed")
        if last:
            return Signal(True, "last_step")
        structural = structural_signal(candidate, checker)
        if structural is not None or self.settings.check_agreement:
            return structural
        return Signal(True, "unchecked")


def _refused(candidate: Candidate) -> bool:
    failure = candidate.failure
    return isinstance(failure, NodeRejected) and not isinstance(failure, ContextLengthExceeded)


def _faults(candidate: Candidate, checker: Checker) -> list[str]:
    """What the checkers find wrong that a repair could fix (nothing for a tool call)."""
    found = checker.verdict(candidate)
    return list(found.faults) if found.repairable else []


def _winner(tried: Sequence[Candidate]) -> int | None:
    """The last accepted answer, else the strongest member's answer that was not rejected."""
    answered = [i for i, c in enumerate(tried) if c.ok and c.outcome != "rejected"]
    accepted = [i for i in answered if tried[i].outcome == "accepted"]
    if accepted:
        return accepted[-1]
    return answered[-1] if answered else None
