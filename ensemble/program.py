"""Program: a coder member writes Python that computes the answer; the gateway runs it.

Small coder models slip in long chains of arithmetic and run out of tokens in them, yet write
short, correct programs for the same problems. On the eval's dev split the 1.5B answered 23
of 25 word problems right by program against 22 by prose, in about half the time
(docs/eval/dev-fit.md). So for math requests the member is asked for a program
(:data:`INSTRUCTION` before the user's question; it may decline a question that asks for no
number, which the dev prompts showed it does), the program runs contained
(:mod:`ensemble.sandbox`), and the answer shows the program, what it printed, and the number
it computed on the last line.

When no member writes a program that runs and prints a number (a failed call, a refused or
failing program, no number printed), the ``fallback`` strategy answers the request as sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Backend, ChatRequest
from ensemble.base import Answer, Context, Options, Strategy
from ensemble.candidates import Candidate, ask
from ensemble.classify import message_text, with_last_user
from ensemble.config import ProgramSettings
from ensemble.decision import Decision
from ensemble.sandbox import Limits, ProgramRun, run_program
from ensemble.signals import extract_code, final_number

DECLINE = "SKIP"
DECLINED = "the member found nothing to compute"
INSTRUCTION = (
    "Write a short Python program that solves the problem below. Compute every quantity with "
    "Python arithmetic and print the final numeric answer. Reply with only the code in a "
    "Python code block. If the problem does not ask for a number, reply only with the word "
    f"{DECLINE}.\n\nProblem: "
)
_NOT_FOR_THE_PROGRAM = ("stop", "logprobs", "top_logprobs", "response_format", "tools",
                        "tool_choice", "max_completion_tokens")  # fmt: skip
_OUTPUT_LINES = 20


@dataclass(frozen=True, slots=True)
class Solution:
    """A program that ran, what it printed, and the number it computed."""

    code: str
    run: ProgramRun
    number: str | None

    @property
    def ok(self) -> bool:
        return self.run.ok and self.number is not None

    @property
    def outcome(self) -> str:
        """The writer's call as the ``booagent`` object records it."""
        if self.ok:
            return "ran"
        return "declined" if self.run.error == DECLINED else "rejected"

    @property
    def why_not(self) -> str:
        if self.run.error is not None:
            return self.run.error
        return "" if self.number is not None else "the program printed no number"


def program_request(request: ChatRequest, max_tokens: int) -> ChatRequest:
    """The request with its last user message turned into a request for a program."""
    body = {k: v for k, v in request.body.items() if k not in _NOT_FOR_THE_PROGRAM}
    messages = with_last_user(body.get("messages") or [], lambda c: INSTRUCTION + message_text(c))
    limit = request.body.get("max_completion_tokens") or request.body.get("max_tokens")
    body.update(messages=messages, max_tokens=limit if isinstance(limit, int) else max_tokens)
    return replace(request, body=body)


def presented(number: str) -> str:
    """A printed number as an answer: ``15.200000000000001`` -> ``15.2``, ``7.0`` -> ``7``."""
    if "/" in number:
        return number
    value = float(number)
    return str(int(value)) if value.is_integer() else f"{value:.10g}"


def answer_text(solution: Solution) -> str:
    """The answer the client reads: the program, its output, then the number alone."""
    assert solution.number is not None
    lines = solution.run.output.strip().splitlines()
    shown = "\n".join(lines[-_OUTPUT_LINES:])
    output = f"`{shown}`" if len(lines) == 1 else f"\n\n```\n{shown}\n```"
    return (
        f"Computed with this Python program:\n\n```python\n{solution.code.strip()}\n```\n\n"
        f"Output: {output}\n\n{presented(solution.number)}"
    )


async def solve(candidate: Candidate, limits: Limits) -> Solution:
    """Run the candidate's program and read the number it printed last."""
    if candidate.text.strip().strip(".`'\"").upper() == DECLINE:
        return Solution("", ProgramRun("", DECLINED), None)
    code = extract_code(candidate.text)
    run = await run_program(code, limits)
    number = final_number(run.output) if run.ok else None
    return Solution(code, run, number)


@dataclass(frozen=True, slots=True)
class Program:
    """The ``program`` strategy."""

    backend: Backend
    settings: ProgramSettings
    fallback: Strategy
    members: tuple[str, ...]
    name: str = "program"

    def deliberates(self, ctx: Context) -> bool:
        return True

    def writers(self, options: Options) -> tuple[str, ...]:
        return options.members or self.settings.members or self.members

    @asynccontextmanager
    async def __call__(self, ctx: Context) -> AsyncIterator[Answer]:
        """The program's answer, or the fallback strategy's when no program ran."""
        decision = await self.decide(ctx)
        texts = ctx.options.explain
        if decision.winner is not None:
            yield decision.answer(texts=texts)
            return
        async with self.fallback(ctx) as fallen:
            yield decision.then(fallen, texts=texts)

    async def decide(self, ctx: Context) -> Decision:
        """Ask the first writer that answers (the next only when a call fails) and run its
        program; a program that fails is not asked again elsewhere: the fallback answers. A
        tool turn is never the program's: its tools may be what the question needs."""
        if ctx.tools:
            why = {"strategy": self.name, "writers": [], "ran": False, "fallback": True,
                   "why": "the request offers tools"}  # fmt: skip
            return Decision(self.name, (), None, why)
        asked = program_request(ctx.request, self.settings.max_tokens)
        limits = Limits(self.settings.cpu_seconds, self.settings.wall_seconds)
        candidates: list[Candidate] = []
        for member in self.writers(ctx.options):
            candidate = await ask(self.backend, asked, member)
            if not candidate.ok:
                candidates.append(candidate)
                continue
            solution = await solve(candidate, limits)
            candidates.append(candidate.judged(solution.outcome))
            return _decided(self.name, candidates, solution)
        return _decided(self.name, candidates, None)


def _decided(name: str, candidates: list[Candidate], solution: Solution | None) -> Decision:
    """The program's answer when it ran and printed a number; else no winner (fallback)."""
    writers = [c.member for c in candidates]
    why: dict[str, Any] = {"strategy": name, "writers": writers}
    if solution is None:
        why.update(ran=False, fallback=True, why="no member wrote a program")
        return Decision(name, tuple(candidates), None, why)
    why.update(
        ran=solution.run.ok,
        answer=presented(solution.number) if solution.number is not None else None,
        fallback=not solution.ok,
        why=solution.why_not or None,
    )
    if not solution.ok:
        return Decision(name, tuple(candidates), None, why)
    return Decision(name, tuple(candidates), len(candidates) - 1, why, answer_text(solution))
