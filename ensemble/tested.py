"""Tested: a Python code request is answered with code that was run against its checks first.

The checks are the examples the request states (:mod:`ensemble.code_checks`: doctests,
``f(x) == y``, input/output pairs, sample runs of a program), or, when it states none,
assertions a member writes from the request (asked separately). Written assertions are weaker
evidence: a third of those the 0.5B writes expect a wrong value (docs/eval/checks.md), so an
answer is faulted by them only when it raises, hangs or does not load on their inputs, not for
giving another value. The first writer's answer runs against the checks in the sandbox
(:mod:`ensemble.code_run`); an answer with a fault is mended in the configured order (repaired
with its faults shown, sampled again, or escalated to the next writer) while another try fits
in the deadline. The answer given is the best tried: every stated example passing first, then
the most stated, then the most written assertions run through, then the most of their values
met; among equals, the earliest. So an answer that failed its checks is never given when one
that passed them exists.

A request that offers tools is checked too, when it is a user's turn that leaves the choice to
the model (``tool_choice`` auto or none): its writers are the members able to call tools, a
first answer that calls a tool is given as it is (the client runs it), and a text answer is
checked as any other. Requests that ask for no code to be written, or for another language,
turns that carry a tool's result or require a call, and requests with nothing to check them
by (no stated example and no ``test_writer``) are the ``fallback`` strategy's, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Backend, ChatRequest
from backends.node import Pace
from backends.toolcalls_plan import tool_choice_of
from ensemble.base import Answer, Context, Strategy
from ensemble.candidates import Candidate, ask
from ensemble.classify import Kind, last_user_text, with_last_user
from ensemble.code_checks import (
    Stated,
    defined_names,
    python_code_asked,
    stated,
    test_request,
    written_tests,
)
from ensemble.code_run import Check, Trial, run_checks
from ensemble.config import Mend, TestedSettings
from ensemble.decision import Decision, decided
from ensemble.sandbox import Limits
from ensemble.signals import extract_code

FEEDBACK = (
    "Your code fails these checks:\n{failures}\n\nFix the code so that every check passes. "
    "Reply with the complete corrected code in a Python code block."
)
BRIEF = (
    "Give the complete code first, in one Python code block, then at most two sentences about it."
)
_SHOWN_FAILURES = 4


@dataclass(frozen=True, slots=True)
class Tried:
    """An answer and how it fared against the checks."""

    candidate: Candidate
    trial: Trial
    how: str

    def rank(self) -> tuple[int, ...]:
        """Higher is better: an answer that ran, every stated example passing, how many
        passed, how many written assertions it ran through without a fault, then how many
        of those gave the value the assertion expects."""
        examples = self.trial.failed("example")
        return (
            int(self.candidate.ok),
            int(self.trial.refused is None),
            int(not examples),
            self.trial.passed("example"),
            self.trial.ran("generated"),
            self.trial.passed("generated"),
        )

    @property
    def sound(self) -> bool:
        """An answer that ran, with no fault found (see :meth:`Trial.faults`)."""
        return self.candidate.ok and self.trial.refused is None and not self.trial.faults()

    def shown(self) -> dict[str, Any]:
        return {"member": self.candidate.member, "how": self.how, **self.trial.summary()}


@dataclass(frozen=True, slots=True)
class Tested:
    """The ``tested`` strategy."""

    backend: Backend
    settings: TestedSettings
    fallback: Strategy
    members: tuple[str, ...]
    pace: Callable[[str], Pace | None] = lambda _: None
    callers: frozenset[str] = frozenset()
    name: str = "tested"

    def checked_task(self, ctx: Context) -> tuple[str, Stated] | None:
        """The task and what it states, for a code request asking for Python to be written on
        a user's turn (one that offers tools only when the model may answer without a call and
        a writer can render them) with checks to run; None: the fallback's request."""
        if ctx.kind is not Kind.CODE or not _users_turn(ctx.body):
            return None
        if ctx.tools and not (_text_allowed(ctx.body) and self.configured(ctx)):
            return None
        task = last_user_text(ctx.body.get("messages") or [])
        if not python_code_asked(task):
            return None
        given = stated(task)
        return (task, given) if self.has_checks(given) else None

    def has_checks(self, given: Stated) -> bool:
        """Whether the answer will have checks to run: stated examples, or a test writer to
        write some (not for a program whose sample runs are not given). Without, the request
        is the fallback's, streamed as it comes, as nothing would be checked."""
        return bool(given.checks) or (self.settings.test_writer is not None and not given.program)

    def configured(self, ctx: Context) -> tuple[str, ...]:
        """The writers the request or the configuration names; on a turn that offers tools,
        only those able to call them (all, when no member is marked)."""
        writers = ctx.options.members or self.settings.members or self.members
        if not ctx.tools or not self.callers:
            return writers
        return tuple(w for w in writers if w in self.callers)

    def deliberates(self, ctx: Context) -> bool:
        return self.checked_task(ctx) is not None or self.fallback.deliberates(ctx)

    def writers(self, ctx: Context, budget: float) -> tuple[str, ...]:
        """The writers in the order they are asked; with ``fit_writer`` the first is one whose
        recent pace answers within ``budget`` seconds (the fastest when none does)."""
        writers = self.configured(ctx)
        if not self.settings.fit_writer or ctx.options.members:
            return writers
        limit = ctx.body.get("max_completion_tokens") or ctx.body.get("max_tokens")
        tokens = limit if isinstance(limit, int) else self.settings.expected_tokens
        times = {w: pace.seconds(tokens) for w in writers if (pace := self.pace(w)) is not None}
        if len(times) < len(writers):
            return writers  # a writer not yet measured: the configured order
        fits = [w for w in writers if times[w] <= budget]
        first = fits[0] if fits else min(writers, key=times.__getitem__)
        return (first, *(w for w in writers if w != first))

    def __call__(self, ctx: Context) -> AbstractAsyncContextManager[Answer]:
        found = self.checked_task(ctx)
        if found is None:
            return self.fallback(ctx)
        return decided(self.decide(ctx, *found), texts=ctx.options.explain)

    async def decide(self, ctx: Context, task: str, given: Stated) -> Decision:
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget = (ctx.options.deadline_ms or self.settings.deadline_ms) / 1000
        request = self._asked(ctx.request, task)
        writers = self.writers(ctx, budget)
        first, written = await self._first(request, writers[0], task, given)
        if first.acc.tool_calls:
            return _called(self.name, first, written, given, loop.time() - started)
        checks = given.checks or self._tests(written, given, first)
        tried = [await self._tried(first, checks, "first")]
        plan = _plan(self.settings.mend, writers, self.settings.tries)
        for how, member in plan:
            best = _best(tried)
            if best.sound or not checks:
                break
            if loop.time() - started + max(t.candidate.latency for t in tried) > budget:
                break
            again = await self._again(request, how, member, best, len(tried))
            tried.append(await self._tried(again, checks, how))
        return _decision(self.name, tried, written, given, checks, loop.time() - started)

    def _asked(self, request: ChatRequest, task: str) -> ChatRequest:
        """The request as the writers get it: with ``brief``, the last user message asks for
        the code first (a system message after it would break some chat templates)."""
        if not self.settings.brief or _explanation_asked(task):
            return request
        messages = with_last_user(request.body.get("messages") or [], _with_brief)
        return replace(request, body={**request.body, "messages": messages})

    async def _first(
        self, request: ChatRequest, member: str, task: str, given: Stated
    ) -> tuple[Candidate, Candidate | None]:
        """The first answer, and the written assertions when the request states no example
        (asked at the same time when the request names its function)."""
        writer = self.settings.test_writer
        if given.checks or writer is None:  # (a request with neither is the fallback's)
            return await ask(self.backend, request, member), None
        if given.entries:
            tests = self._test_call(request, writer, task, given.entries[0])
            return await asyncio.gather(ask(self.backend, request, member), tests)
        first = await ask(self.backend, request, member)
        named = defined_names(extract_code(first.text)) if first.ok else ()
        if not named:
            return first, None
        return first, await self._test_call(request, writer, task, named[0])

    async def _test_call(
        self, request: ChatRequest, writer: str, task: str, entry: str
    ) -> Candidate:
        body = {
            "messages": [{"role": "user", "content": test_request(task, entry)}],
            "max_tokens": self.settings.test_tokens,
            "temperature": 0,
        }
        return await ask(self.backend, replace(request, body=body), writer)

    def _tests(
        self, written: Candidate | None, given: Stated, first: Candidate
    ) -> tuple[Check, ...]:
        if written is None or not written.ok:
            return ()
        names = given.entries or defined_names(extract_code(first.text))
        return written_tests(written.text, tuple(names))

    async def _tried(self, candidate: Candidate, checks: Sequence[Check], how: str) -> Tried:
        limits = Limits(self.settings.cpu_seconds, self.settings.wall_seconds)
        if not candidate.ok:
            return Tried(candidate, Trial("", refused="the call failed"), how)
        trial = await run_checks(extract_code(candidate.text), checks, limits)
        return Tried(candidate, trial, how)

    async def _again(
        self, request: ChatRequest, how: Mend, member: str, best: Tried, count: int
    ) -> Candidate:
        if how == "repair":
            return await ask(self.backend, _repair(request, best), best.candidate.member)
        if how == "resample":
            return await ask(self.backend, request, best.candidate.member, count)
        return await ask(self.backend, request, member)


def _plan(mend: Sequence[Mend], writers: Sequence[str], tries: int) -> list[tuple[Mend, str]]:
    """The mending tries in order, each with the writer an escalation goes to; an escalation
    past the last writer is dropped."""
    plan: list[tuple[Mend, str]] = []
    step = 1
    for how in mend:
        if how == "escalate":
            if step >= len(writers):
                continue
            plan.append((how, writers[step]))
            step += 1
        else:
            plan.append((how, writers[0]))
    return plan[: tries - 1]


def _best(tried: Sequence[Tried]) -> Tried:
    """The best answer tried; the earliest among equals."""
    return max(tried, key=Tried.rank)  # the first of the best, as max keeps the first


def _repair(request: ChatRequest, best: Tried) -> ChatRequest:
    failures = "\n".join(f"- {r.shown()}" for r in best.trial.faults()[:_SHOWN_FAILURES])
    if best.trial.refused is not None:
        failures = f"- {best.trial.refused}"
    messages = [
        *(request.body.get("messages") or []),
        {"role": "assistant", "content": best.candidate.text},
        {"role": "user", "content": FEEDBACK.format(failures=failures)},
    ]
    return replace(request, body={**request.body, "messages": messages})


def _with_brief(content: Any) -> Any:
    """A user message's content with :data:`BRIEF` after it (a text part for a list of
    parts, so that images and other parts stay)."""
    if isinstance(content, list):
        return [*content, {"type": "text", "text": BRIEF}]
    return f"{content}\n\n{BRIEF}"


def _explanation_asked(task: str) -> bool:
    lowered = task.lower()
    return any(word in lowered for word in ("explain", "explanation", "why ", "step by step",
                                            "walk me through", "comment"))  # fmt: skip


def _users_turn(body: Mapping[str, Any]) -> bool:
    """The conversation ends with a user's message (not a tool's result to answer from)."""
    messages = body.get("messages")
    last = messages[-1] if isinstance(messages, list) and messages else None
    return isinstance(last, Mapping) and last.get("role") == "user"


def _text_allowed(body: Mapping[str, Any]) -> bool:
    """The client leaves the model free to answer in text (``tool_choice`` auto or none)."""
    return tool_choice_of(body)[0] in ("auto", "none")


def _called(
    name: str, first: Candidate, written: Candidate | None, given: Stated, seconds: float
) -> Decision:
    """The first answer calls a tool: given as it is, unchecked (the client runs the call)."""
    why = {**_why(name, given, written, (), [], seconds), "tool_call": True}
    calls = _calls([first.judged("accepted")], written)
    return Decision(name, calls, 0 if first.ok else None, why)


def _calls(answers: list[Candidate], written: Candidate | None) -> tuple[Candidate, ...]:
    """The answers' calls, then the test writer's (when it was asked)."""
    return (*answers, *([] if written is None else [written.judged("wrote_tests")]))


def _why(
    name: str,
    given: Stated,
    written: Candidate | None,
    checks: Sequence[Check],
    tried: Sequence[Tried],
    seconds: float,
) -> dict[str, Any]:
    """What ``booagent`` reports of a decision: the checks, each try, whether the answer
    passed them all."""
    best = _best(tried) if tried else None
    return {
        "strategy": name,
        "checks": {
            "stated": len(given.checks),
            "written": sum(c.origin == "generated" for c in checks),
            "by": written.member if written is not None else None,
        },
        "tries": [t.shown() for t in tried],
        "passed": best is not None and best.trial.clean and bool(checks),
        "seconds": round(seconds, 3),
    }


def _decision(
    name: str,
    tried: list[Tried],
    written: Candidate | None,
    given: Stated,
    checks: Sequence[Check],
    seconds: float,
) -> Decision:
    best = _best(tried)
    winner = next(index for index, t in enumerate(tried) if t is best)
    answers = [t.candidate.judged("accepted" if t is best else "rejected") for t in tried]
    why = _why(name, given, written, checks, tried, seconds)
    return Decision(name, _calls(answers, written), winner if best.candidate.ok else None, why)
