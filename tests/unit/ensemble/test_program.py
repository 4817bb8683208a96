"""The program strategy against fake nodes: a member writes a program, the gateway runs it."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import ChatRequest
from backends.config import Member
from backends.errors import BooagentError, NodeUnreachable
from ensemble.base import Answer, Context, Options
from ensemble.classify import Kind
from ensemble.config import ProgramSettings
from ensemble.program import INSTRUCTION, Program, presented
from ensemble.route import Router
from ensemble.signals import final_number
from tests.fakes import FakeNode, fake_pool

pytestmark = pytest.mark.anyio

WRITER, OTHER = Member(name="writer"), Member(name="other")
QUESTION = "Tom has 12 apples and gives 5 away. How many are left?"
MATH_Q = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ],
    "max_tokens": 300,
    "stop": ["\n\n"],
    "seed": 3,
}
GOOD = "```python\napples = 12\ngiven = 5\nprint(apples - given)\n```"


def program(*nodes: FakeNode, **settings: Any) -> Program:
    members = (WRITER, OTHER)[: len(nodes)]
    pool = fake_pool(list(zip(nodes, members, strict=True)))
    names = tuple(m.name for m in members)
    router = Router(pool, {Kind.GENERAL: names, Kind.MATH: names}, names)
    return Program(pool, ProgramSettings(**settings), router, names)


def prose_or_code(code: str, prose: str) -> Any:
    """A reply function: ``code`` when asked for a program, ``prose`` when asked as sent."""

    def reply(request: ChatRequest) -> str:
        asked = request.body["messages"][-1]["content"]
        return code if asked.startswith(INSTRUCTION) else prose

    return reply


async def run(
    strategy: Program, body: dict[str, Any], options: Options | None = None
) -> tuple[str, Answer, Any]:
    """The text the client would see, the answer, and the usage its chunks carried."""
    text, usage = "", None
    async with strategy(Context.of(body, options=options or Options())) as answer:
        async for chunk in answer.chunks:
            text += chunk.content
            usage = chunk.usage or usage
    return text, answer, usage


def outcomes(answer: Answer) -> list[str]:
    return [c.outcome for c in answer.every_call()]


class TestProgram:
    async def test_the_answer_shows_the_program_its_output_and_the_number_last(self) -> None:
        text, answer, _ = await run(program(FakeNode("w", reply=GOOD)), MATH_Q)
        assert "print(apples - given)" in text and "Output: `7`" in text
        assert text.splitlines()[-1] == "7"
        assert answer.why["answer"] == "7" and not answer.why["fallback"]
        assert answer.node == "w" and outcomes(answer)[0] == "ran"

    async def test_the_member_is_asked_for_a_program_for_the_last_user_message(self) -> None:
        writer = FakeNode("w", reply=GOOD)
        await run(program(writer), MATH_Q)
        body = writer.requests[0].body
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        assert body["messages"][1]["content"] == INSTRUCTION + QUESTION
        assert body["max_tokens"] == 300 and body["seed"] == 3 and "stop" not in body

    async def test_without_max_tokens_the_configured_budget_applies(self) -> None:
        writer = FakeNode("w", reply=GOOD)
        body = {k: v for k, v in MATH_Q.items() if k != "max_tokens"}
        await run(program(writer, max_tokens=64), body)
        assert writer.requests[0].body["max_tokens"] == 64

    async def test_usage_is_the_program_calls(self) -> None:
        _, _, usage = await run(program(FakeNode("w", reply=GOOD)), MATH_Q)
        assert usage["completion_tokens"] == len(GOOD.split(" "))

    async def test_a_failing_program_falls_back_to_the_answer_as_asked(self) -> None:
        broken = "```python\nprint(apples - 5)\n```"
        writer = FakeNode("w", reply=prose_or_code(broken, "Seven apples are left: 7"))
        text, answer, _ = await run(program(writer), MATH_Q)
        assert text == "Seven apples are left: 7"
        assert answer.why["fallback"] and "NameError" in answer.why["why"]
        assert outcomes(answer) == ["rejected", "fallback"]
        assert writer.requests[1].body == MATH_Q, "the fallback gets the request as sent"
        assert answer.unseen["completion_tokens"] == len(broken.split(" "))

    async def test_a_refused_program_never_runs_and_falls_back(self) -> None:
        escape = "```python\nimport os\nprint(os.system('true'))\n```"
        writer = FakeNode("w", reply=prose_or_code(escape, "7"))
        text, answer, _ = await run(program(writer), MATH_Q)
        assert text == "7" and "imports 'os'" in answer.why["why"]

    async def test_a_declined_question_falls_back(self) -> None:
        """A member that finds nothing to compute says SKIP; the question is answered as asked."""
        writer = FakeNode("w", reply=prose_or_code("SKIP", "Run a little faster each week."))
        text, answer, _ = await run(program(writer), MATH_Q)
        assert text == "Run a little faster each week."
        assert outcomes(answer)[0] == "declined" and answer.why["fallback"]

    async def test_a_program_that_prints_no_number_falls_back(self) -> None:
        writer = FakeNode("w", reply=prose_or_code("```python\nprint('many')\n```", "7"))
        _, answer, _ = await run(program(writer), MATH_Q)
        assert answer.why["why"] == "the program printed no number"

    async def test_a_failed_call_goes_to_the_next_writer(self) -> None:
        down = FakeNode("w", fail_before=NodeUnreachable("w", "refused"))
        other = FakeNode("o", reply=GOOD)
        text, answer, _ = await run(program(down, other), MATH_Q)
        assert text.endswith("\n7") and answer.why["writers"] == ["writer", "other"]
        assert outcomes(answer) == ["failed", "ran"]

    async def test_the_request_may_name_the_writers(self) -> None:
        first, second = FakeNode("w", reply=GOOD), FakeNode("o", reply=GOOD)
        await run(program(first, second), MATH_Q, Options(members=("other",)))
        assert first.requests == [] and len(second.requests) == 1


class TestPresented:
    @pytest.mark.parametrize(
        ("printed", "shown"),
        [
            ("7", "7"),
            ("7.0", "7"),
            ("15.200000000000001", "15.2"),
            ("-3.5", "-3.5"),
            ("1/3", "1/3"),
        ],
    )
    def test_printed_numbers_read_as_answers(self, printed: str, shown: str) -> None:
        assert presented(printed) == shown

    @given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12))
    def test_a_printed_float_keeps_its_value(self, value: float) -> None:
        """What the program printed and what the answer says agree to ten digits."""
        found = final_number(repr(value))
        assert found is not None
        assert math.isclose(float(presented(found)), value, rel_tol=1e-9, abs_tol=1e-9)


REPLIES = {
    "good": GOOD,
    "broken": "```python\nprint(apples)\n```",
    "declined": "SKIP",
    "no number": "```python\nprint('seven')\n```",
}


class TestBound:
    @settings(max_examples=30, deadline=None)
    @given(
        first=st.sampled_from([*REPLIES, "down"]),
        second=st.sampled_from([*REPLIES, "down"]),
    )
    async def test_calls_never_exceed_the_writers_plus_the_fallback(
        self, first: str, second: str
    ) -> None:
        """Whatever the writers do, a request makes at most one call per writer and one more
        for the fallback, and the answer is the program's or the fallback's."""
        nodes = [
            FakeNode(name, fail_before=NodeUnreachable(name, "refused"))
            if outcome == "down"
            else FakeNode(name, reply=prose_or_code(REPLIES[outcome], "prose answer 7"))
            for name, outcome in (("w", first), ("o", second))
        ]
        try:
            text, answer, _ = await run(program(*nodes), MATH_Q)
        except BooagentError:
            assert first == second == "down"
            return
        assert len(answer.every_call()) <= 3
        assert text == "prose answer 7" or text.splitlines()[-1] == "7"
