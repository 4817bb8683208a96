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

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing
from dataclasses import dataclass, replace
from typing import Any

from backends.base import Backend, ChatRequest, Chunk, Served
from ensemble.base import NO_OPTIONS, Options, Strategy, keepalives
from ensemble.candidates import Candidate, ask, settle, text_chunks
from ensemble.classify import kind_of, message_text
from ensemble.config import ProgramSettings
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
    messages = list(body.get("messages") or [])
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, Mapping) and message.get("role") == "user":
            asked = INSTRUCTION + message_text(message.get("content"))
            messages[index] = {**message, "content": asked}
            break
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
    keepalive_seconds: float = 2.0
    name: str = "program"

    def writers(self, options: Options) -> tuple[str, ...]:
        return options.members or self.settings.members or self.members

    def __call__(
        self, request: ChatRequest, served: Served, options: Options = NO_OPTIONS
    ) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
        """The answer stream; leaving the block cancels whatever is still running."""
        return aclosing(self._run(request, served, options))

    async def _run(
        self, request: ChatRequest, served: Served, options: Options
    ) -> AsyncGenerator[Chunk, None]:
        kind_of(request, served)
        served.strategy = self.name
        task = asyncio.ensure_future(self._write_and_run(request, options))
        try:
            async for beat in keepalives(task, self.keepalive_seconds):
                yield beat
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        candidates, solution = task.result()
        winner = candidates[-1] if solution is not None and solution.ok else None
        settle(served, candidates, winner, texts=options.explain)
        served.decision = _decision(solution, candidates)
        if winner is not None and solution is not None:
            for chunk in text_chunks(answer_text(solution), winner.usage):
                yield chunk
            return
        async for chunk in self._fall_back(request, served, options):
            yield chunk

    async def _write_and_run(
        self, request: ChatRequest, options: Options
    ) -> tuple[list[Candidate], Solution | None]:
        """Ask the first writer that answers (the next only when a call fails) and run its
        program; a program that fails is not asked again elsewhere: the fallback answers."""
        asked = program_request(request, self.settings.max_tokens)
        limits = Limits(self.settings.cpu_seconds, self.settings.wall_seconds)
        candidates: list[Candidate] = []
        solution = None
        for member in self.writers(options):
            candidate = await ask(self.backend, asked, member)
            candidates.append(candidate)
            if not candidate.ok:
                continue
            solution = await solve(candidate, limits)
            candidate.outcome = solution.outcome
            break
        return candidates, solution

    async def _fall_back(
        self, request: ChatRequest, served: Served, options: Options
    ) -> AsyncIterator[Chunk]:
        """The fallback strategy's answer, recorded as one more call."""
        started = asyncio.get_running_loop().time()
        call = Candidate("", outcome="fallback")
        async with self.fallback(request, served, options) as chunks:
            async for chunk in chunks:
                call.chunks.append(chunk)
                call.acc.add(chunk)
                yield chunk
        served.strategy = self.name
        call.member, call.node = served.member, served.node
        call.latency = asyncio.get_running_loop().time() - started
        served.calls.append(call.record())


def _decision(solution: Solution | None, candidates: list[Candidate]) -> dict[str, Any]:
    base: dict[str, Any] = {"strategy": "program", "writers": [c.member for c in candidates]}
    if solution is None:
        return {**base, "ran": False, "fallback": True, "why": "no member wrote a program"}
    return {
        **base,
        "ran": solution.run.ok,
        "answer": presented(solution.number) if solution.number is not None else None,
        "fallback": not solution.ok,
        "why": solution.why_not or None,
    }
