"""A committed answer whose node fails mid-answer goes on on another node of its member."""

from __future__ import annotations

from typing import Any

import pytest

from backends.base import ChatRequest, Chunk, Reply
from backends.config import Breaker, Member, Policies, Retry
from backends.continuation import Partial, chat_chunk, continuable, without_echo
from backends.errors import NodeTimeout, NodeUnreachable, StreamInterrupted
from backends.pool import Pool
from tests.fakes import ANSWER_STARTS, FakeNode, FakeTemplate, content_chunk, fake_pool

pytestmark = pytest.mark.anyio

SMOL, OTHER = Member(name="smol"), Member(name="other")
ANSWER = "one two three four five six"
CHAT = {"messages": [{"role": "user", "content": "count"}], "max_tokens": 50}
CUT = NodeUnreachable("a", "connection lost: reset")


def _policies(attempts: int = 3) -> Policies:
    return Policies(retry=Retry(attempts=attempts), breaker=Breaker(failures=2, open_seconds=60))


def failing(name: str, *, at: int = 2, **extra: Any) -> FakeNode:
    """A node that answers ANSWER and fails after ``at`` words."""
    error = NodeUnreachable(name, "connection lost: reset")
    return FakeNode(name, reply=ANSWER, fail_after=error, fail_at=at, **extra)


def twins() -> Pool:
    """Node a fails after two words; b, a native llama-server, can go on."""
    return fake_pool(
        [(failing("a"), SMOL), (FakeNode("b", reply=ANSWER, kind="llama_server"), SMOL)]
    )


def in_order(pool: Pool) -> Pool:
    """The pool's nodes picked in the order given (selection weighs speed by 1 / TTFT)."""
    for i, node in enumerate(pool.nodes):
        node.stats.ttft = 0.001 * 30**i
    return pool


async def read(pool: Pool, body: dict[str, Any] = CHAT) -> tuple[Reply, list[Chunk]]:
    async with in_order(pool).stream(ChatRequest(body, ("smol",))) as reply:
        chunks = [chunk async for chunk in reply]
    return reply, chunks


def text(chunks: list[Chunk]) -> str:
    return "".join(c.content for c in chunks)


class TestHandOver:
    async def test_a_native_sibling_goes_on_and_only_the_new_text_is_relayed(self) -> None:
        """The sibling is asked with the answer so far as a final assistant message; it sends
        that back merged with its first new word, and the client gets each word once."""
        sibling = FakeNode("b", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)])
        _, chunks = await read(pool)
        assert text(chunks) == ANSWER
        assert sibling.requests[0].body["messages"][-1] == {
            "role": "assistant",
            "content": "one two",
        }
        assert chunks[-1].usage is not None and chunks[-2].finish_reason == "stop"

    async def test_the_template_is_not_rendered_for_native_siblings(self) -> None:
        """Rendering (and, the first time, loading the member's GGUF) is for llama_cpp.server."""
        template = FakeTemplate()
        sibling = FakeNode("b", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)], templates={"smol": template})
        await read(pool)
        assert template.bodies == [] and len(sibling.requests) == 1

    async def test_a_sibling_that_does_not_echo_is_relayed_as_it_comes(self) -> None:
        sibling = FakeNode("b", reply=ANSWER, kind="llama_server", echo=False)
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)])
        _, chunks = await read(pool)
        assert text(chunks) == ANSWER

    async def test_llama_cpp_server_is_asked_on_completions_with_the_rendered_prompt(self) -> None:
        """It cannot prefill: it gets the member's template's prompt plus the answer so far,
        with the template's end-of-turn as a stop and the sampling fields as they were."""
        sibling = FakeNode("b", reply=ANSWER, kind="llama_cpp_server")
        template = FakeTemplate()
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)], templates={"smol": template})
        body = {**CHAT, "temperature": 0, "seed": 7, "stop": ["\n\n"]}
        _, chunks = await read(pool, body)
        assert text(chunks) == ANSWER
        asked = sibling.requests[0].body
        assert asked["prompt"] == f"count{ANSWER_STARTS}one two"
        assert (asked["stop"], asked["temperature"], asked["seed"]) == (["\n\n", "<|end|>"], 0, 7)
        assert "messages" not in asked and template.bodies[0]["messages"] == CHAT["messages"]

    async def test_the_reply_says_where_the_answer_was_handed_on(self) -> None:
        pool = twins()
        reply, _ = await read(pool)
        assert [c.as_dict() for c in reply.continued] == [
            {"from": "a", "to": "b", "after_chars": len("one two"), "reason": "unreachable"}
        ]
        assert reply.attempts == ("a",) and reply.every_attempt == ("a", "b")
        assert [(f.node, f.reason) for f in reply.every_failure] == [("a", "unreachable")]

    async def test_the_failed_node_counts_against_its_breaker_and_the_sibling_is_scored(
        self,
    ) -> None:
        pool = twins()
        await read(pool)
        a, b = pool.nodes
        assert (a.health.failures, a.stats.failed, a.stats.served) == (1, 1, 0)
        assert (b.health.failures, b.stats.served) == (0, 1)
        assert a.admission.in_flight == b.admission.in_flight == 0

    async def test_usage_counts_both_parts(self) -> None:
        """One usage chunk at the end: both nodes' prompts and a token per content chunk."""
        pool = twins()
        reply, chunks = await read(pool)
        usage = chunks[-1].usage
        assert usage is not None and usage["completion_tokens"] == 6
        assert usage["prompt_tokens"] == 2 * reply.prompt_tokens + 2

    async def test_the_continuation_asks_for_the_tokens_left(self) -> None:
        sibling = FakeNode("b", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)])
        await read(pool, {**CHAT, "max_tokens": 5})
        assert sibling.requests[0].body["max_tokens"] == 3

    async def test_a_sibling_that_fails_before_its_first_token_gives_way_to_the_next(
        self,
    ) -> None:
        down = FakeNode("b", kind="llama_server", fail_before=NodeTimeout("b", "no response"))
        good = FakeNode("c", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(failing("a"), SMOL), (down, SMOL), (good, SMOL)])
        reply, chunks = await read(pool)
        assert text(chunks) == ANSWER
        (handed,) = reply.continued
        assert (handed.to, handed.tried) == ("c", ("b", "c"))
        assert [f.reason for f in handed.failures] == ["timeout"]

    async def test_a_sibling_that_fails_mid_answer_is_continued_in_turn(self) -> None:
        second = failing("b", at=2, kind="llama_server", echo=False)
        third = FakeNode("c", reply=ANSWER, kind="llama_server", echo=False)
        pool = fake_pool([(failing("a"), SMOL), (second, SMOL), (third, SMOL)])
        reply, chunks = await read(pool)
        assert text(chunks) == ANSWER
        assert [(c.error.node, c.to, c.after_chars) for c in reply.continued] == [
            ("a", "b", 7),
            ("b", "c", 18),
        ]


class TestNoHandOver:
    @pytest.mark.parametrize(
        "extra",
        [
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            {"response_format": {"type": "json_object"}},
            {"grammar": 'root ::= "x"'},
        ],
        ids=["tools", "json", "grammar"],
    )
    async def test_a_constrained_answer_ends_with_the_interruption(
        self, extra: dict[str, Any]
    ) -> None:
        """An answer that may be a call, or must match a schema or grammar, is not continued:
        the stream ends with StreamInterrupted and the sibling is never asked."""
        sibling = FakeNode("b", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)])
        with pytest.raises(StreamInterrupted, match="failed after the answer began"):
            await read(pool, {**CHAT, **extra})
        assert sibling.requests == []

    async def test_without_a_sibling_the_stream_ends_with_the_interruption(self) -> None:
        """The only node of the member failed: the error the client sees is as before, and
        the failure is recorded with no node to take over."""
        pool = fake_pool([(failing("a"), SMOL), (FakeNode("x", kind="llama_server"), OTHER)])
        got: list[Chunk] = []
        with pytest.raises(StreamInterrupted, match="node a failed after the answer began"):
            async with in_order(pool).stream(ChatRequest(CHAT, ("smol", "other"))) as reply:
                async for chunk in reply:
                    got.append(chunk)
        assert text(got) == "one two"
        assert [(c.to, c.tried) for c in reply.continued] == [(None, ())]
        assert pool.nodes[1].backend.requests == []  # type: ignore[attr-defined]

    async def test_llama_cpp_server_without_the_members_template_is_not_asked(self) -> None:
        sibling = FakeNode("b", reply=ANSWER, kind="llama_cpp_server")
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)])
        with pytest.raises(StreamInterrupted):
            await read(pool)
        assert sibling.requests == []

    async def test_a_template_that_cannot_render_the_conversation_asks_no_one(self) -> None:
        sibling = FakeNode("b", reply=ANSWER, kind="llama_cpp_server")
        templates = {"smol": FakeTemplate(broken=True)}
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)], templates=templates)
        with pytest.raises(StreamInterrupted):
            await read(pool)
        assert sibling.requests == []

    async def test_continuing_takes_one_of_the_requests_attempts(self) -> None:
        """Two attempts: one spent before the commit, one by the node that failed mid-answer;
        none is left to continue."""
        down = FakeNode("a", fail_before=NodeUnreachable("a", "refused"), kind="llama_server")
        spare = FakeNode("c", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(down, SMOL), (failing("b"), SMOL), (spare, SMOL)], _policies(2))
        with pytest.raises(StreamInterrupted):
            await read(pool)
        assert spare.requests == []

    async def test_an_answer_is_handed_on_twice_at_most(self) -> None:
        nodes = [failing(n, at=1, kind="llama_server", echo=False) for n in "abc"]
        spare = FakeNode("d", reply=ANSWER, kind="llama_server")
        pool = fake_pool([*((n, SMOL) for n in nodes), (spare, SMOL)], _policies(10))
        with pytest.raises(StreamInterrupted, match="node c failed"):
            await read(pool)
        assert spare.requests == []

    async def test_a_node_that_fails_once_the_answer_has_its_max_tokens_ends_it(self) -> None:
        sibling = FakeNode("b", reply=ANSWER, kind="llama_server")
        pool = fake_pool([(failing("a"), SMOL), (sibling, SMOL)])
        _, chunks = await read(pool, {**CHAT, "max_tokens": 2})
        assert (text(chunks), chunks[-1].finish_reason) == ("one two", "length")
        assert sibling.requests == []


class TestParts:
    def test_plain_text_requests_are_continuable(self) -> None:
        assert continuable({"messages": [], "response_format": {"type": "text"}})
        assert not continuable({"messages": [{"role": "tool", "content": "1"}]})

    def test_a_partial_answer_with_a_call_or_reasoning_is_not_plain(self) -> None:
        partial = Partial()
        partial.add(Chunk({"choices": [{"delta": {"reasoning_content": "hmm"}}]}))
        assert not partial.plain and partial.tokens == 1

    async def test_an_echo_spread_over_chunks_is_taken_off(self) -> None:
        async def chunks() -> Any:
            for piece in ("one", " two", " three", " four"):
                yield content_chunk(piece)

        got = [c.content async for c in without_echo(chunks(), "one two")]
        assert got == [" three", " four"]

    def test_a_completion_chunk_becomes_a_chat_chunk(self) -> None:
        data = {"object": "text_completion", "id": "cmpl-1",
                "choices": [{"index": 0, "text": " hi", "finish_reason": None}]}  # fmt: skip
        chunk = Chunk(chat_chunk(data))
        assert (chunk.content, chunk.data["object"], chunk.data["id"]) == (
            " hi", "chat.completion.chunk", "cmpl-1",
        )  # fmt: skip
