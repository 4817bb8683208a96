"""Cascade and ensemble strategies against fake nodes (the real pool in between)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ensemble.base as base_module
from backends.base import ChatRequest
from backends.config import Member
from backends.errors import AllNodesFailed, NodeUnreachable
from ensemble.auto import Auto
from ensemble.base import Answer, Context, Options
from ensemble.cascade import Cascade
from ensemble.config import CascadeSettings, EnsembleSettings, ProgramSettings
from ensemble.fanout import Ensemble
from ensemble.program import Program
from ensemble.route import Router
from tests.fakes import FakeNode, fake_pool

pytestmark = pytest.mark.anyio

CHEAP, STRONG, THIRD = Member(name="cheap"), Member(name="strong"), Member(name="third")
CODE_Q = {"messages": [{"role": "user", "content": "Write a Python function to add numbers."}]}
CHAT_Q = {"messages": [{"role": "user", "content": "Tell me about the moon."}], "seed": 7}
MATH_Q = {"messages": [{"role": "user", "content": "Tom has 3 apples and buys 4 more. How many?"}]}


async def run(
    strategy: Any, body: dict[str, Any], options: Options | None = None
) -> tuple[str, Answer]:
    """The text the client would see, and the answer the strategy returned."""
    text = ""
    async with strategy(Context.of(body, options=options or Options())) as answer:
        async for chunk in answer.chunks:
            text += chunk.content
    return text, answer


def cascade(*nodes: FakeNode, ladder: Sequence[str] = ("cheap", "strong"), **kw: Any) -> Cascade:
    members = (CHEAP, STRONG, THIRD)[: len(nodes)]
    pool = fake_pool(list(zip(nodes, members, strict=True)))
    settings = CascadeSettings(ladders={"default": tuple(ladder)}, **kw)
    return Cascade(pool, settings, tuple(m.name for m in members))


def ensemble(*nodes: FakeNode, samples: int = 1, deadline_ms: int = 2000) -> Ensemble:
    members = (CHEAP, STRONG, THIRD)[: len(nodes)]
    pool = fake_pool(list(zip(nodes, members, strict=True)))
    names = tuple(m.name for m in members)
    settings = EnsembleSettings(members=names, samples=samples, deadline_ms=deadline_ms)
    return Ensemble(pool, settings, names, slots=lambda _: samples)


def by_seed(*answers: str) -> Any:
    """A reply function: a different answer per seed (sample)."""
    return lambda request: answers[int(request.body.get("seed", 0)) % len(answers)]


class TestCascade:
    async def test_valid_code_from_the_cheap_member_is_accepted(self) -> None:
        cheap, strong = (
            FakeNode("c", reply="```python\ndef add(a, b): return a + b\n```"),
            FakeNode("s"),
        )
        text, answer = await run(cascade(cheap, strong), CODE_Q)
        assert "def add" in text and strong.requests == []
        assert answer.why["escalations"] == 0
        assert answer.why["steps"][0]["signal"] == "code_parses"

    async def test_broken_code_escalates(self) -> None:
        cheap = FakeNode("c", reply="```python\ndef add(a, b) return\n```")
        strong = FakeNode("s", reply="```python\ndef add(a, b):\n    return a + b\n```")
        text, answer = await run(cascade(cheap, strong), CODE_Q)
        assert "return a + b" in text
        assert answer.why["escalations"] == 1 and answer.node == "s"
        assert [c.outcome for c in answer.calls] == ["escalated", "accepted"]

    async def test_agreeing_samples_stop_early(self) -> None:
        cheap, strong = FakeNode("c", reply="the moon is a rock"), FakeNode("s")
        text, answer = await run(cascade(cheap, strong), CHAT_Q)
        assert text == "the moon is a rock"
        assert len(cheap.requests) == 2 and strong.requests == []
        assert answer.why["steps"][0]["score"] == 1.0

    async def test_disagreeing_samples_escalate(self) -> None:
        cheap = FakeNode("c", reply=by_seed("cheese moon story here", "a rock in space orbiting"))
        strong = FakeNode("s", reply="the moon orbits the earth")
        text, _ = await run(cascade(cheap, strong), CHAT_Q)
        assert text == "the moon orbits the earth"

    async def test_json_format_is_checked(self) -> None:
        body = {**CHAT_Q, "response_format": {"type": "json_object"}}
        cheap, strong = FakeNode("c", reply="not json at all"), FakeNode("s", reply='{"a": 1}')
        text, answer = await run(cascade(cheap, strong), body)
        assert text == '{"a": 1}'
        assert answer.why["steps"][0]["signal"] == "json_valid"

    async def test_failing_member_escalates(self) -> None:
        cheap = FakeNode("c", fail_before=NodeUnreachable("c", "refused"))
        strong = FakeNode("s", reply="fine")
        text, answer = await run(cascade(cheap, strong), CHAT_Q)
        assert text == "fine" and answer.calls[0].outcome == "failed"

    async def test_every_member_failing_is_an_error(self) -> None:
        error = NodeUnreachable("x", "refused")
        strategy = cascade(FakeNode("c", fail_before=error), FakeNode("s", fail_before=error))
        with pytest.raises(AllNodesFailed):
            await run(strategy, CHAT_Q)

    async def test_usage_counts_every_call(self) -> None:
        cheap = FakeNode("c", reply="```python\ndef f(:\n```")
        strong = FakeNode("s", reply="```python\ndef f(): pass\n```")
        _, answer = await run(cascade(cheap, strong), CODE_Q)
        assert answer.unseen["completion_tokens"] == 2, "the cheap answer's two chunks"


SEA_Q = {"messages": [{"role": "user", "content": "Describe the sea in exactly 3 words."}]}


def on_feedback(first: str, fixed: str) -> Any:
    """A reply function: ``first``, and ``fixed`` once told what is wrong."""
    return lambda request: fixed if len(request.body["messages"]) > 1 else first


class TestRepair:
    async def test_a_broken_instruction_is_sent_back_with_the_fault_named(self) -> None:
        node = FakeNode("s", reply=on_feedback("The sea is very big.", "Vast blue sea."))
        text, answer = await run(cascade(node, ladder=("cheap",), repair=True), SEA_Q)
        assert text == "Vast blue sea."
        feedback = node.requests[1].body["messages"]
        assert feedback[1] == {"role": "assistant", "content": "The sea is very big."}
        assert "use exactly 3 words (yours: 5 words)" in feedback[2]["content"]
        assert [c.outcome for c in answer.calls] == ["repaired", "accepted"]
        step = answer.why["steps"][-1]
        assert step["signal"] == "repair" and step["accepted"] and step["left"] == []
        assert answer.why["escalations"] == 0

    async def test_a_repair_that_is_no_better_is_dropped(self) -> None:
        node = FakeNode("s", reply=on_feedback("The sea is very big.", "The sea is big."))
        text, answer = await run(cascade(node, ladder=("cheap",), repair=True), SEA_Q)
        assert text == "The sea is very big."
        assert [c.outcome for c in answer.calls] == ["accepted", "rejected"]
        assert answer.unseen["completion_tokens"] > 0, "the dropped repair is paid for"

    async def test_a_failed_repair_keeps_the_answer(self) -> None:
        def reply(request: ChatRequest) -> str:
            if len(request.body["messages"]) > 1:
                raise NodeUnreachable("s", "gone")
            return "The sea is very big."

        node = FakeNode("s", reply=reply)
        text, answer = await run(cascade(node, ladder=("cheap",), repair=True), SEA_Q)
        assert text == "The sea is very big."
        assert [c.outcome for c in answer.calls] == ["accepted", "failed"]

    async def test_an_answer_that_keeps_the_rules_is_not_repaired(self) -> None:
        node = FakeNode("s", reply="Vast blue sea.")
        _, answer = await run(cascade(node, ladder=("cheap",), repair=True), SEA_Q)
        assert len(node.requests) == 1 and len(answer.calls) == 1

    async def test_repair_is_off_unless_configured(self) -> None:
        node = FakeNode("s", reply="The sea is very big.")
        await run(cascade(node, ladder=("cheap",)), SEA_Q)
        assert len(node.requests) == 1


class TestResample:
    async def test_a_faulted_answer_is_replaced_by_a_fresh_sample_that_keeps_the_rules(
        self,
    ) -> None:
        node = FakeNode("s", reply=by_seed("The sea is very big.", "Vast blue sea."))
        text, answer = await run(cascade(node, ladder=("cheap",), resample=1), SEA_Q)
        assert text == "Vast blue sea."
        again = node.requests[1].body
        assert again["messages"] == SEA_Q["messages"], "the request as sent, not a repair"
        assert again["seed"] == 1 and again["temperature"] >= 0.8
        assert [c.outcome for c in answer.calls] == ["resampled", "accepted"]
        assert answer.why["steps"][-1]["signal"] == "resample"
        assert answer.why["escalations"] == 0

    async def test_samples_stop_at_the_first_faultless_answer(self) -> None:
        node = FakeNode("s", reply=by_seed("The sea is very big.", "Vast blue sea.", "x"))
        _, answer = await run(cascade(node, ladder=("cheap",), resample=3, repair=True), SEA_Q)
        assert len(node.requests) == 2 and len(answer.calls) == 2

    async def test_each_sample_has_its_own_seed_then_the_repair_follows(self) -> None:
        def reply(request: ChatRequest) -> str:
            if len(request.body["messages"]) > 1:
                return "Vast blue sea."
            return "The sea is very big." if request.body.get("seed", 0) < 2 else "A big sea here."

        node = FakeNode("s", reply=reply)
        text, answer = await run(cascade(node, ladder=("cheap",), resample=2, repair=True), SEA_Q)
        assert text == "Vast blue sea."
        assert [r.body.get("seed", 0) for r in node.requests[:3]] == [0, 1, 2]
        steps = answer.why["steps"][1:]
        assert [(s["signal"], s["accepted"]) for s in steps] == [
            ("resample", False), ("resample", False), ("repair", True)
        ]  # fmt: skip
        assert "yours: 5 words" in node.requests[3].body["messages"][-1]["content"]

    async def test_an_instruction_of_form_is_asked_again_under_its_grammar(self) -> None:
        """With ``constrain``, a word count the answer broke is enforced by a grammar, and
        neither a fresh sample nor a repair is tried."""
        node = FakeNode(
            "s", reply=lambda r: "Vast blue sea." if "grammar" in r.body else "The sea is big."
        )
        settings = {"resample": 1, "repair": True, "constrain": True}
        text, answer = await run(cascade(node, ladder=("cheap",), **settings), SEA_Q)
        assert text == "Vast blue sea." and len(node.requests) == 2
        assert "(sep word){2,2}" in node.requests[1].body["grammar"]
        assert node.requests[1].body["messages"] == SEA_Q["messages"]
        assert [c.outcome for c in answer.calls] == ["constrained", "accepted"]

    async def test_without_a_grammar_for_the_rules_the_resample_is_used(self) -> None:
        body = {"messages": [{"role": "user", "content": "Use the word 'sea' exactly twice."}]}
        node = FakeNode("s", reply=by_seed("The sea.", "Sea, oh sea."))
        settings = {"resample": 1, "constrain": True}
        text, _ = await run(cascade(node, ladder=("cheap",), **settings), body)
        assert text == "Sea, oh sea." and all("grammar" not in r.body for r in node.requests)


class TestConfidence:
    def confident(self, *nodes: FakeNode, cheap: bool = True) -> Cascade:
        strategy = cascade(*nodes, confidence=0.8)
        return replace(strategy, cheap_logprobs=lambda member: cheap and member == "cheap")

    async def test_a_confident_answer_is_accepted_without_a_second_sample(self) -> None:
        cheap, strong = FakeNode("c", reply="the moon is a rock", logprob=-0.05), FakeNode("s")
        text, answer = await run(self.confident(cheap, strong), CHAT_Q)
        assert text == "the moon is a rock" and len(cheap.requests) == 1 and not strong.requests
        assert cheap.requests[0].body["logprobs"] is True
        step = answer.why["steps"][0]
        assert step["signal"] == "confidence" and step["score"] == 0.951

    async def test_an_unsure_answer_escalates(self) -> None:
        cheap = FakeNode("c", reply="the moon is cheese", logprob=-1.0)
        strong = FakeNode("s", reply="the moon is a rock")
        text, answer = await run(self.confident(cheap, strong), CHAT_Q)
        assert text == "the moon is a rock"
        assert answer.why["steps"][0] == {
            "member": "cheap", "signal": "confidence", "score": 0.368, "accepted": False
        }  # fmt: skip

    async def test_log_probs_the_client_did_not_ask_for_are_not_returned(self) -> None:
        cheap = FakeNode("c", reply="a rock", logprob=-0.01)
        strategy = self.confident(cheap, FakeNode("s"))
        async with strategy(Context.of(CHAT_Q)) as answer:
            seen = [chunk async for chunk in answer.chunks]
        assert seen and all("logprobs" not in chunk.choice for chunk in seen)

    async def test_where_log_probs_are_costly_two_samples_decide(self) -> None:
        """On a llama_cpp.server node the cascade never asks for log-probs (about 6x slower
        there); agreement between two samples decides instead."""
        cheap = FakeNode("c", reply="the moon is a rock", logprob=-0.01)
        _, answer = await run(self.confident(cheap, FakeNode("s"), cheap=False), CHAT_Q)
        assert len(cheap.requests) == 2 and all("logprobs" not in r.body for r in cheap.requests)
        assert answer.why["steps"][0]["signal"] == "agreement"

    async def test_a_node_that_sends_no_log_probs_falls_back_to_agreement(self) -> None:
        cheap = FakeNode("c", reply="the moon is a rock")
        _, answer = await run(self.confident(cheap, FakeNode("s")), CHAT_Q)
        assert answer.why["steps"][0]["signal"] == "agreement"

    async def test_checkable_answers_are_judged_by_their_checks_not_log_probs(self) -> None:
        cheap = FakeNode("c", reply="```python\ndef add(a, b): return a + b\n```", logprob=-3.0)
        _, answer = await run(self.confident(cheap, FakeNode("s")), CODE_Q)
        assert "logprobs" not in cheap.requests[0].body
        assert answer.why["steps"][0]["signal"] == "code_parses"


class TestTidy:
    async def test_a_tidied_answer_is_accepted_without_escalating(self) -> None:
        """An answer that breaks only "all lowercase" is lowercased, not asked of another."""
        body = {"messages": [{"role": "user", "content": "Describe a tree, all lowercase."}]}
        cheap, strong = FakeNode("c", reply="A Tall Green Tree."), FakeNode("s")
        text, answer = await run(cascade(cheap, strong), body)
        assert text == "a tall green tree." and strong.requests == []
        assert answer.calls[0].tidied is True
        assert answer.unseen["completion_tokens"] == 0, "the tidied answer is the client's"

    async def test_an_unwanted_code_fence_is_unwrapped(self) -> None:
        prompt = "Return a JSON object with the key name. Output only the JSON, no code block."
        body = {"messages": [{"role": "user", "content": prompt}]}
        cheap = FakeNode("c", reply='```json\n{"name": "x"}\n```')
        text, _ = await run(cascade(cheap, FakeNode("s")), body)
        assert text == '{"name": "x"}'

    async def test_ensemble_candidates_are_tidied_before_the_vote(self) -> None:
        body = {"messages": [{"role": "user", "content": "Name a colour, all lowercase."}]}
        nodes = FakeNode("a", reply="Blue"), FakeNode("b", reply="blue")
        text, answer = await run(ensemble(*nodes), body)
        assert text == "blue" and answer.why["votes"] == 2


class TestEnsemble:
    async def test_majority_vote_on_numbers(self) -> None:
        nodes = FakeNode("a", reply="It is 7."), FakeNode("b", reply="7"), FakeNode("c", reply="8")
        text, answer = await run(ensemble(*nodes), MATH_Q)
        assert text in ("It is 7.", "7")
        assert answer.why["method"] == "majority_vote" and answer.why["votes"] == 2

    async def test_tie_goes_to_the_preferred_member(self) -> None:
        nodes = FakeNode("a", reply="5"), FakeNode("b", reply="6")
        text, _ = await run(ensemble(*nodes), MATH_Q)
        assert text == "5"

    async def test_free_text_picks_the_most_agreeing(self) -> None:
        nodes = (
            FakeNode("a", reply="the moon is made of rock and dust"),
            FakeNode("b", reply="bananas are yellow fruit"),
            FakeNode("c", reply="the moon is made of rock"),
        )
        text, answer = await run(ensemble(*nodes), CHAT_Q)
        assert text.startswith("the moon is made of rock")
        assert answer.why["method"] == "agreement"

    async def test_code_that_does_not_parse_is_dropped(self) -> None:
        nodes = (
            FakeNode("a", reply="```python\ndef add(a, b) return a+b\n```"),
            FakeNode("b", reply="```python\ndef add(a, b):\n    return a + b\n```"),
        )
        text, answer = await run(ensemble(*nodes), CODE_Q)
        assert "return a + b" in text and answer.why["dropped_invalid"] == 1

    async def test_members_by_kind_replace_the_default_members(self) -> None:
        nodes = FakeNode("a", reply="7"), FakeNode("b", reply="7"), FakeNode("c", reply="7")
        pool = fake_pool(list(zip(nodes, (CHEAP, STRONG, THIRD), strict=True)))
        settings = EnsembleSettings(
            members=("cheap", "strong", "third"), members_by_kind={"math": ("strong", "third")}
        )
        strategy = Ensemble(pool, settings, ("cheap", "strong", "third"), slots=lambda _: 1)
        _, answer = await run(strategy, MATH_Q)
        assert [c.member for c in answer.calls] == ["strong", "third"]
        assert nodes[0].requests == []
        _, answer = await run(strategy, CHAT_Q)
        assert [c.member for c in answer.calls] == ["cheap", "strong", "third"]

    async def test_an_answer_breaking_an_instruction_is_dropped(self) -> None:
        nodes = (
            FakeNode("a", reply="The sea is very big."),
            FakeNode("b", reply="Vast blue sea."),
            FakeNode("c", reply="The sea is so very big."),
        )
        text, answer = await run(ensemble(*nodes), SEA_Q)
        assert text == "Vast blue sea."
        assert answer.why["dropped_invalid"] == 2
        assert answer.why["method"] == "only_candidate"

    async def test_when_every_answer_breaks_an_instruction_all_are_kept(self) -> None:
        nodes = FakeNode("a", reply="The sea is big."), FakeNode("b", reply="A sea.")
        text, answer = await run(ensemble(*nodes), SEA_Q)
        assert text in ("The sea is big.", "A sea.")
        assert answer.why["dropped_invalid"] == 0

    async def test_failing_member_does_not_fail_the_request(self) -> None:
        nodes = FakeNode("a", fail_before=NodeUnreachable("a", "down")), FakeNode("b", reply="ok")
        text, answer = await run(ensemble(*nodes), CHAT_Q)
        assert text == "ok" and answer.why["answered"] == 1

    async def test_deadline_cancels_stragglers_and_frees_them(self) -> None:
        fast, slow = FakeNode("a", reply="quick"), FakeNode("b", reply="slow answer", delay=5)
        text, answer = await run(ensemble(fast, slow, deadline_ms=300), CHAT_Q)
        assert text == "quick"
        assert slow.closed == 1, "the straggler's upstream stream was closed"
        assert [c.outcome for c in answer.calls] == ["won", "failed"]

    async def test_past_the_deadline_the_first_answer_is_taken(self) -> None:
        """Nobody answered by the deadline: the first answer after it ends the wait."""
        down = FakeNode("a", fail_before=NodeUnreachable("a", "down"))
        slow, slower = FakeNode("b", reply="late", delay=0.3), FakeNode("c", delay=5)
        text, answer = await run(ensemble(down, slow, slower, deadline_ms=100), CHAT_Q)
        assert text == "late" and slower.closed == 1
        assert answer.why["answered"] == 1

    async def test_every_member_failing_is_an_error(self) -> None:
        error = NodeUnreachable("x", "down")
        nodes = FakeNode("a", fail_before=error), FakeNode("b", fail_before=error)
        with pytest.raises(AllNodesFailed):
            await run(ensemble(*nodes, deadline_ms=200), CHAT_Q)

    async def test_samples_use_different_seeds(self) -> None:
        node = FakeNode("a", reply=by_seed("1", "2", "2"))
        text, _ = await run(ensemble(node, samples=3), {**MATH_Q, "seed": 0})
        assert text == "2" and {r.body["seed"] for r in node.requests} == {0, 1, 2}

    async def test_usage_sums_every_member(self) -> None:
        nodes = FakeNode("a", reply="one two"), FakeNode("b", reply="one two three")
        _, answer = await run(ensemble(*nodes), CHAT_Q)
        assert answer.unseen["completion_tokens"] in (2, 3)


class TestAuto:
    async def test_picks_by_kind_and_honours_the_override(self) -> None:
        node = FakeNode("a", reply="```python\nx = 1\n```")
        pool = fake_pool([(node, CHEAP)])
        named: dict[str, Any] = {
            "route": Router(pool, {}, ("cheap",)),
            "cascade": Cascade(pool, CascadeSettings(), ("cheap",)),
            "ensemble": Ensemble(pool, EnsembleSettings(), ("cheap",)),
        }
        auto = Auto(named, {"code": "cascade"})
        _, answer = await run(auto, CODE_Q)
        assert answer.strategy == "cascade"
        _, answer = await run(auto, CODE_Q, Options(strategy="ensemble"))
        assert answer.strategy == "ensemble"
        _, answer = await run(auto, CHAT_Q)
        assert answer.strategy == "route"

    @pytest.mark.parametrize("chosen", ["route", "cascade", "ensemble", "program"])
    async def test_a_request_is_classified_once(
        self, chosen: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[object] = []
        real = base_module.classify
        monkeypatch.setattr(base_module, "classify", lambda body: calls.append(body) or real(body))
        pool = fake_pool([(FakeNode("a", reply="```python\nx = 1\n```"), CHEAP)])
        router = Router(pool, {}, ("cheap",))
        named: dict[str, Any] = {
            "route": router,
            "cascade": Cascade(pool, CascadeSettings(), ("cheap",)),
            "ensemble": Ensemble(pool, EnsembleSettings(), ("cheap",)),
            "program": Program(pool, ProgramSettings(), router, ("cheap",)),
        }
        _, answer = await run(Auto(named, {"code": chosen}), CODE_Q)
        assert answer.strategy == chosen
        assert len(calls) == 1


class TestProperties:
    @settings(max_examples=25, deadline=None)
    @given(
        answers=st.lists(
            st.sampled_from(["1", "2", "3", "the moon", "a rock"]), min_size=1, max_size=3
        ),
        delays=st.lists(st.floats(0, 0.02), min_size=3, max_size=3),
        samples=st.integers(1, 2),
    )
    def test_ensemble_bounds_and_order_independence(
        self, answers: list[str], delays: list[float], samples: int
    ) -> None:
        """Never more calls than members x samples; the result is one of the candidates; the
        same answers finishing in another order give the same winner."""
        results = []
        for order in (delays, list(reversed(delays))):
            nodes = [
                FakeNode(f"n{i}", reply=a, delay=d)
                for i, (a, d) in enumerate(zip(answers, order, strict=False))
            ]
            text, _ = asyncio.run(run(ensemble(*nodes, samples=samples), MATH_Q))
            assert sum(len(n.requests) for n in nodes) <= len(nodes) * samples
            assert text in answers
            results.append(text)
        assert results[0] == results[1]

    @settings(max_examples=25, deadline=None)
    @given(
        replies=st.lists(
            st.sampled_from(["a b c", "x y", "```python\ndef f(:\n```"]), min_size=2, max_size=3
        ),
        repair=st.booleans(),
        resample=st.integers(0, 3),
    )
    def test_cascade_call_bound(self, replies: list[str], repair: bool, resample: int) -> None:
        """At most two calls per ladder step, plus the resamples and the repair, and the answer
        is one a member gave."""
        nodes = [FakeNode(f"n{i}", reply=r) for i, r in enumerate(replies)]
        ladder = ("cheap", "strong", "third")[: len(nodes)]
        body = {"messages": [{"role": "user", "content": "Say it in exactly 2 words."}]}
        run_it = cascade(*nodes, ladder=ladder, repair=repair, resample=resample)
        text, _ = asyncio.run(run(run_it, body))
        assert sum(len(n.requests) for n in nodes) <= 2 * len(nodes) + resample + repair
        assert text in replies
