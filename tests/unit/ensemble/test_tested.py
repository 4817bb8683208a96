"""The tested strategy against fake nodes: code answers run against the request's checks.

The strategy and its settings are imported under other names: pytest would collect classes
whose names start with ``Test``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.base import ChatRequest, Chunk
from backends.config import Member
from backends.node import Pace
from ensemble.base import Answer, Context, Options
from ensemble.candidates import Candidate
from ensemble.classify import Kind
from ensemble.code_run import Assertion, Result, Trial
from ensemble.config import TestedSettings as Settings
from ensemble.route import Router
from ensemble.tested import BRIEF, Tried, _best, _plan
from ensemble.tested import Tested as Checked
from tests.fakes import FakeNode, content_chunk, fake_pool, node_chunk, tool_fragment

pytestmark = pytest.mark.anyio

WRITER, STRONG, TESTER = Member(name="writer"), Member(name="strong"), Member(name="tester")
ASKED = (
    "Write a Python function `double(n)` that returns twice n. For example, `double(2)` "
    "should return `4` and double(-3) -> -6."
)
UNSTATED = "Write a Python function `double(n)` that returns twice the integer n."
GOOD = "Here it is:\n```python\ndef double(n):\n    return 2 * n\n```"
WRONG = "```python\ndef double(n):\n    return n + 2\n```"
RAISES = "```python\ndef double(n):\n    raise ValueError('no')\n```"
HOSTILE = "```python\nimport os\ndef double(n):\n    os.system('true')\n    return 2 * n\n```"


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "max_tokens": 300, **extra}


def checked(*nodes: FakeNode, **settings: Any) -> Checked:
    members = (WRITER, STRONG, TESTER)[: len(nodes)]
    pool = fake_pool(list(zip(nodes, members, strict=True)))
    names = tuple(m.name for m in members)
    writers = tuple(n for n in names if n != "tester")
    router = Router(pool, {Kind.GENERAL: names, Kind.CODE: names}, names)
    return Checked(pool, Settings(members=writers, **settings), router, names)


def repaired_by(good: str, first: str) -> Any:
    """A reply function: ``first`` for a new request, ``good`` when shown its failures."""

    def reply(request: ChatRequest) -> str:
        last = request.body["messages"][-1]["content"]
        return good if "fails these checks" in last else first

    return reply


async def run(
    strategy: Checked, request: dict[str, Any], options: Options | None = None
) -> tuple[str, Answer]:
    text = ""
    async with strategy(Context.of(request, options=options or Options())) as answer:
        async for chunk in answer.chunks:
            text += chunk.content
    return text, answer


def members_asked(answer: Answer) -> list[tuple[str, str]]:
    return [(c.member, c.outcome) for c in answer.every_call()]


class TestStatedExamples:
    async def test_an_answer_that_passes_is_given_after_one_call(self) -> None:
        text, answer = await run(checked(FakeNode("w", reply=GOOD)), body(ASKED))
        assert text == GOOD
        assert answer.why["passed"] is True
        assert answer.why["checks"] == {"stated": 2, "written": 0, "by": None}
        assert answer.why["tries"] == [{"member": "writer", "how": "first", "checks": 2,
                                        "passed": 2}]  # fmt: skip
        assert members_asked(answer) == [("writer", "accepted")]

    async def test_a_failing_answer_is_repaired_with_its_failures_shown(self) -> None:
        node = FakeNode("w", reply=repaired_by(GOOD, WRONG))
        text, answer = await run(checked(node), body(ASKED))
        assert text == GOOD
        feedback = node.requests[-1].body["messages"][-1]["content"]
        assert "double(2) == 4: got 4" not in feedback and "double(-3) == -6: got -1" in feedback
        assert node.requests[-1].body["messages"][-2]["content"] == WRONG
        assert [t["how"] for t in answer.why["tries"]] == ["first", "repair"]
        assert members_asked(answer) == [("writer", "rejected"), ("writer", "accepted")]

    async def test_when_the_repair_fails_too_the_next_writer_is_asked(self) -> None:
        strategy = checked(FakeNode("w", reply=WRONG), FakeNode("s", reply=GOOD))
        text, answer = await run(strategy, body(ASKED))
        assert text == GOOD
        assert [(t["member"], t["how"]) for t in answer.why["tries"]] == [
            ("writer", "first"), ("writer", "repair"), ("strong", "escalate")
        ]  # fmt: skip
        assert answer.why["passed"] is True

    async def test_when_nothing_passes_the_answer_passing_most_is_given(self) -> None:
        half = "```python\ndef double(n):\n    return 4 if n == 2 else 0\n```"
        strategy = checked(FakeNode("w", reply=RAISES), FakeNode("s", reply=half))
        text, answer = await run(strategy, body(ASKED))
        assert text == half
        assert answer.why["passed"] is False
        assert [t["passed"] for t in answer.why["tries"]] == [0, 0, 1]

    async def test_a_hostile_answer_is_refused_and_never_given_over_a_clean_one(self) -> None:
        strategy = checked(FakeNode("w", reply=HOSTILE), FakeNode("s", reply=GOOD))
        text, answer = await run(strategy, body(ASKED))
        assert text == GOOD
        assert answer.why["tries"][0]["refused"] == "the code imports 'os'"

    async def test_the_deadline_stops_mending(self) -> None:
        strategy = checked(FakeNode("w", reply=WRONG, delay=0.05), FakeNode("s", reply=GOOD))
        text, answer = await run(strategy, body(ASKED), Options(deadline_ms=100))
        assert text == WRONG
        assert len(answer.why["tries"]) == 1

    async def test_tries_bound_the_calls(self) -> None:
        strategy = checked(FakeNode("w", reply=WRONG), FakeNode("s", reply=GOOD), tries=2)
        text, answer = await run(strategy, body(ASKED))
        assert text == WRONG and len(answer.why["tries"]) == 2


class TestWrittenTests:
    async def test_a_member_writes_assertions_when_the_request_states_none(self) -> None:
        """An answer that raises on the written assertions' inputs is repaired."""
        asserts = "```python\nassert double(3) == 6\nassert double(0) == 0\nprint('x')\n```"
        tester = FakeNode("t", reply=asserts)
        writer = FakeNode("w", reply=repaired_by(GOOD, RAISES))
        strategy = checked(writer, FakeNode("s", reply=GOOD), tester, test_writer="tester")
        text, answer = await run(strategy, body(UNSTATED))
        assert text == GOOD
        assert answer.why["checks"] == {"stated": 0, "written": 2, "by": "tester"}
        assert "`double`" in tester.requests[0].body["messages"][0]["content"]
        assert ("tester", "wrote_tests") in members_asked(answer)
        assert [t["how"] for t in answer.why["tries"]] == ["first", "repair"]

    async def test_another_value_than_a_written_assertion_expects_is_no_fault(self) -> None:
        """Written assertions often expect a wrong value: differing from one does not send
        the answer back."""
        asserts = "```python\nassert double(3) == 7\n```"
        strategy = checked(FakeNode("w", reply=GOOD), FakeNode("s", reply=GOOD),
                          FakeNode("t", reply=asserts), test_writer="tester")  # fmt: skip
        text, answer = await run(strategy, body(UNSTATED))
        assert text == GOOD
        assert answer.why["tries"] == [{"member": "writer", "how": "first", "checks": 1,
                                        "passed": 0, "faults": 0,
                                        "first_failure": "double(3) == 7: got 6"}]  # fmt: skip
        assert answer.why["passed"] is False

    async def test_without_a_test_writer_an_unstated_request_is_streamed_unchecked(self) -> None:
        """Nothing would check it: the fallback streams the answer as it comes."""
        strategy = checked(FakeNode("w", reply=WRONG))
        assert not strategy.deliberates(Context.of(body(UNSTATED)))
        text, answer = await run(strategy, body(UNSTATED))
        assert text == WRONG and answer.strategy == "route"

    async def test_a_program_without_sample_runs_is_streamed_unchecked(self) -> None:
        asked = "Write a Python program that reads a line from standard input and prints it."
        strategy = checked(FakeNode("w", reply=GOOD), FakeNode("t", reply="assert True"),
                           test_writer="tester")  # fmt: skip
        _, answer = await run(strategy, body(asked))
        assert answer.strategy == "route"


class TestPrograms:
    async def test_a_program_is_fed_the_sample_input(self) -> None:
        asked = ("Write a Python program that reads two integers from standard input and "
                 "prints their sum.\n\nSample Input\n2 3\n\nSample Output\n5\n")  # fmt: skip
        good = "```python\na, b = map(int, input().split())\nprint(a + b)\n```"
        wrong = "```python\na, b = map(int, input().split())\nprint(a * b)\n```"
        node = FakeNode("w", reply=repaired_by(good, wrong))
        text, answer = await run(checked(node), body(asked))
        assert text == good
        assert "it printed '6\\n'" in answer.why["tries"][0]["first_failure"]


class TestPassThrough:
    @pytest.mark.parametrize(
        "text",
        [
            "Write a JavaScript function add(a, b) that returns a + b.",
            "What does this Python code print? print(len('abc'))",
            "Tell me a joke about cats.",
        ],
    )
    async def test_other_requests_go_to_the_fallback_streamed(self, text: str) -> None:
        strategy = checked(FakeNode("w", reply="fine"))
        ctx = Context.of(body(text))
        assert not strategy.deliberates(ctx)
        answered, answer = await run(strategy, body(text))
        assert answered == "fine" and answer.strategy == "route"

    @pytest.mark.parametrize(
        "extra",
        [
            {"tool_choice": "required"},
            {"tool_choice": {"type": "function", "function": {"name": "run"}}},
        ],
    )
    async def test_a_turn_that_requires_a_call_goes_to_the_fallback(
        self, extra: dict[str, Any]
    ) -> None:
        strategy = checked(FakeNode("w", reply="fine"))
        _, answer = await run(strategy, body(ASKED, tools=TOOLS, **extra))
        assert answer.strategy == "route"

    async def test_a_turn_answering_from_a_tools_result_goes_to_the_fallback(self) -> None:
        messages = [
            {"role": "user", "content": ASKED},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "run", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "done"},
        ]  # fmt: skip
        strategy = checked(FakeNode("w", reply="fine"))
        _, answer = await run(strategy, {"messages": messages, "tools": TOOLS})
        assert answer.strategy == "route"


TOOLS = [{"type": "function", "function": {"name": "run", "parameters": {}}}]


@dataclass
class CallingNode(FakeNode):
    """Answers every request with a call of the tool ``run``."""

    async def _chunks(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        yield node_chunk({"role": "assistant"})
        yield tool_fragment(0, id="call_1", name="run", arguments="{}")
        yield node_chunk({}, finish="tool_calls")


class TestToolsOffered:
    """An agent offers its tools with every turn; a code request among them is still checked."""

    async def test_a_text_answer_is_checked_and_mended(self) -> None:
        node = FakeNode("w", reply=repaired_by(GOOD, WRONG))
        text, answer = await run(checked(node), body(ASKED, tools=TOOLS))
        assert text == GOOD and answer.strategy == "tested"
        assert [t["how"] for t in answer.why["tries"]] == ["first", "repair"]
        assert all(r.body.get("tools") == TOOLS for r in node.requests)

    async def test_a_tool_call_is_given_unchecked(self) -> None:
        strategy = checked(CallingNode("w"))
        async with strategy(Context.of(body(ASKED, tools=TOOLS))) as answer:
            chunks = [chunk async for chunk in answer.chunks]
        assert answer.strategy == "tested" and answer.why["tool_call"] is True
        calls = [c for chunk in chunks for c in chunk.delta.get("tool_calls") or []]
        assert calls and calls[0]["function"]["name"] == "run"
        assert members_asked(answer) == [("writer", "accepted")]

    async def test_only_members_able_to_call_tools_write(self) -> None:
        writer, strong = FakeNode("w", reply=WRONG), FakeNode("s", reply=GOOD)
        strategy = replace(checked(writer, strong), callers=frozenset({"strong"}))
        text, answer = await run(strategy, body(ASKED, tools=TOOLS))
        assert text == GOOD and not writer.requests
        assert members_asked(answer) == [("strong", "accepted")]
        await run(strategy, body(ASKED))
        assert writer.requests, "without tools every writer may answer"

    async def test_no_writer_able_to_call_tools_is_the_fallbacks(self) -> None:
        strategy = replace(checked(FakeNode("w", reply="fine")), callers=frozenset({"other"}))
        _, answer = await run(strategy, body(ASKED, tools=TOOLS))
        assert answer.strategy == "route"


class TestBrief:
    async def test_brief_asks_for_the_code_first_unless_an_explanation_is_asked(self) -> None:
        node = FakeNode("w", reply=GOOD)
        await run(checked(node, brief=True), body(ASKED))
        await run(checked(node, brief=True), body(ASKED + " Explain how it works."))
        first, second = (r.body["messages"][-1]["content"] for r in node.requests)
        assert first.startswith(ASKED) and first.endswith(BRIEF)
        assert BRIEF not in second


OUTCOMES = st.sampled_from(["pass", "wrong", "crash"])


@st.composite
def tries(draw: st.DrawFn) -> list[Tried]:
    """Answers judged by the same checks (a few stated, a few written), some refused."""
    stated, written = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    count = draw(st.integers(1, 5))
    found = []
    for _ in range(count):
        outcomes = draw(st.lists(OUTCOMES, min_size=stated + written, max_size=stated + written))
        found.append(tried_with(outcomes[:stated], outcomes[stated:], draw(st.booleans())))
    return found


class TestChoice:
    @settings(max_examples=300, deadline=None)
    @given(tries())
    def test_a_failed_answer_is_never_chosen_over_one_that_passed(self, tried: list[Tried]) -> None:
        best = _best(tried)
        if any(t.trial.clean for t in tried):
            assert best.trial.clean
        if any(t.sound for t in tried):
            assert best.sound
        assert best.rank() == max(t.rank() for t in tried)
        first = next(t for t in tried if t.rank() == best.rank())
        assert best is first

    def test_the_plan_escalates_only_to_writers_there_are(self) -> None:
        assert _plan(("repair", "escalate", "escalate"), ("a", "b"), 8) == [
            ("repair", "a"), ("escalate", "b")
        ]  # fmt: skip
        assert _plan(("resample", "repair", "escalate"), ("a", "b"), 2) == [("resample", "a")]


def tried_with(stated: list[str], written: list[str], runs: bool) -> Tried:
    results = tuple(
        Result(
            Assertion(f"assert {i}", origin),
            None if outcome == "pass" else "no",
            wrong=outcome == "wrong",
        )
        for origin, outcomes in (("example", stated), ("generated", written))
        for i, outcome in enumerate(outcomes)
    )
    trial = Trial("x", results) if runs else Trial("x", refused="does not parse")
    return Tried(Candidate("m", chunks=(content_chunk("x"),)), trial, "first")


class TestFitWriter:
    @pytest.mark.parametrize(
        ("deadline_ms", "first"),
        [(20_000, "writer"), (5_000, "strong"), (1_000, "strong")],
    )
    async def test_the_first_writer_is_one_whose_pace_fits_the_deadline(
        self, deadline_ms: int, first: str
    ) -> None:
        """writer: 1 s + 300 tokens at 20/s = 16 s; strong: 0.5 s + 300 at 100/s = 3.5 s."""
        paces = {"writer": Pace(1.0, 20.0), "strong": Pace(0.5, 100.0)}
        strategy = replace(
            checked(FakeNode("w", reply=GOOD), FakeNode("s", reply=GOOD), fit_writer=True),
            pace=paces.get,
        )
        _, answer = await run(strategy, body(ASKED), Options(deadline_ms=deadline_ms))
        assert answer.why["tries"][0]["member"] == first

    async def test_an_unmeasured_writer_keeps_the_configured_order(self) -> None:
        strategy = replace(
            checked(FakeNode("w", reply=GOOD), FakeNode("s", reply=GOOD), fit_writer=True),
            pace={"strong": Pace(0.1, 1000.0)}.get,
        )
        _, answer = await run(strategy, body(ASKED), Options(deadline_ms=1000))
        assert answer.why["tries"][0]["member"] == "writer"
