"""The failover pool returns what it did: a reply that carries where the answer came from."""

from __future__ import annotations

import asyncio

import pytest

from backends.base import ChatRequest, Reply
from backends.config import Member
from backends.errors import NodeProtocolError, NodeUnreachable, PromptTooLong, RequestFailed
from backends.http import Probe
from backends.pool import Pool
from tests.fakes import FakeNode, GatedNode, fake_pool, until

pytestmark = pytest.mark.anyio

SMALL, BIG = Member(name="small"), Member(name="big")
CHAT = {"messages": [{"role": "user", "content": "hi"}]}


async def answer(pool: Pool, request: ChatRequest) -> tuple[Reply, str]:
    async with pool.stream(request) as reply:
        text = "".join([chunk.content async for chunk in reply])
    return reply, text


async def test_a_reply_names_its_node_attempts_and_failures() -> None:
    """After a failover, the reply names the node that answered, every node tried in order,
    and the failures on the way."""
    down = FakeNode("a", fail_before=NodeUnreachable("a", "refused"))
    pool = fake_pool([(down, SMALL), (FakeNode("b", reply="hi there"), BIG)])
    reply, text = await answer(pool, ChatRequest(CHAT, ("small", "big")))
    assert text == "hi there"
    assert (reply.node, reply.member, reply.attempts) == ("b", "big", ("a", "b"))
    assert [(f.node, f.reason) for f in reply.failures] == [("a", "unreachable")]


async def test_a_reply_counts_the_time_spent_queued() -> None:
    """A request that waited for the node's only slot says how long: here at least the 0.1 s
    between its joining the queue and the slot's holder being let go."""
    node = GatedNode("a", reply="one two three")
    pool = fake_pool([(node, SMALL)])
    first = asyncio.create_task(answer(pool, ChatRequest(CHAT)))
    await until(lambda: node.active == 1)
    second = asyncio.create_task(answer(pool, ChatRequest(CHAT)))
    await until(lambda: pool.nodes[0].admission.queued == 1)
    await asyncio.sleep(0.1)
    node.gate.set()
    await first
    reply, _ = await second
    assert reply.queue_wait >= 0.1


async def test_the_first_token_of_a_whole_answer_is_its_first_chunk() -> None:
    """For a buffered request the pool reads the whole answer before committing, but the
    first-token time it reports (and learns for selection) is that of the first content."""
    node = GatedNode("a", reply="one two three four five", before=1)
    pool = fake_pool([(node, SMALL)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    asked = asyncio.create_task(answer(pool, ChatRequest(CHAT, buffered=True)))
    await asyncio.sleep(0.3)  # the rest of the answer comes 0.3 s after its first word
    node.gate.set()
    reply, _ = await asked
    whole = loop.time() - started
    assert reply.first_token < whole / 2
    stats = pool.nodes[0].stats
    assert stats.ttft is not None and stats.ttft < whole / 2


async def test_the_slot_is_held_for_the_block_and_freed_after() -> None:
    node = FakeNode("a", reply="hello")
    pool = fake_pool([(node, SMALL)])
    async with pool.stream(ChatRequest(CHAT)) as reply:
        assert pool.nodes[0].admission.in_flight == 1
        async for _ in reply:
            pass
    assert pool.nodes[0].admission.in_flight == 0 and node.closed == 1


async def test_a_users_turn_is_served_before_waiting_chores() -> None:
    """On a busy node, a user's turn that arrives after a chore is served before it."""
    node = FakeNode("a", reply="one two", delay=0.03)
    pool = fake_pool([(node, SMALL)])
    busy = asyncio.create_task(answer(pool, ChatRequest(CHAT)))
    await asyncio.sleep(0.01)
    chore = asyncio.create_task(answer(pool, ChatRequest({"messages": ["chore"]}, priority=1)))
    await asyncio.sleep(0.01)
    user = asyncio.create_task(answer(pool, ChatRequest({"messages": ["user"]})))
    await asyncio.gather(busy, chore, user)
    assert [r.body["messages"] for r in node.requests[1:]] == [["user"], ["chore"]]


class Counted:
    """A counter that says every prompt takes ``tokens``."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens

    async def count(self, body: object) -> int:
        return self.tokens


LONG_ASK = {"messages": [{"role": "user", "content": "x " * 12000}], "max_tokens": 3000}


def sized_pool(tokens: int) -> tuple[Pool, FakeNode, FakeNode]:
    small, big = FakeNode("s"), FakeNode("b")
    members = (Member(name="small", n_ctx=4096), Member(name="big", n_ctx=16384))
    pool = fake_pool([(small, members[0]), (big, members[1])])
    vocab = {"small": Counted(tokens), "big": Counted(tokens)}
    return Pool(pool.nodes, pool._policies, vocab=vocab), small, big


async def test_a_prompt_too_long_for_a_member_goes_to_one_it_fits_and_says_so() -> None:
    pool, small, big = sized_pool(6623)
    reply, _ = await answer(pool, ChatRequest(LONG_ASK, ("small", "big")))
    assert reply.node == "b" and small.requests == [] and len(big.requests) == 1
    assert reply.fitted == ("small: prompt 6623 tokens, context 4096",)


async def test_max_tokens_is_clamped_for_the_node_and_noted() -> None:
    pool, _, big = sized_pool(14000)
    reply, _ = await answer(pool, ChatRequest(LONG_ASK, ("big",)))
    assert big.requests[0].body["max_tokens"] == 2384
    assert reply.fitted == ("big: max_tokens 3000 clamped to 2384",)


async def test_a_prompt_no_member_holds_is_refused_before_any_node() -> None:
    pool, small, big = sized_pool(20000)
    with pytest.raises(PromptTooLong):
        await answer(pool, ChatRequest(LONG_ASK))
    assert small.requests == big.requests == []


def refusing(name: str) -> FakeNode:
    """A healthy node that ends every answer empty, as llama_cpp.server does for a prompt
    longer than its context."""
    return FakeNode(name, fail_before=NodeProtocolError(name, "stream ended empty",
                                                        inside_answer=True))  # fmt: skip


async def test_a_request_that_fails_inside_a_healthy_node_is_not_the_nodes_fault() -> None:
    """It is tried on the member's other node only (never down to another member), then
    refused as the request's fault; neither node's breaker counts it."""
    first, second, other = refusing("a1"), refusing("a2"), FakeNode("b")
    pool = fake_pool([(first, SMALL), (second, SMALL), (other, BIG)])
    with pytest.raises(RequestFailed) as caught:
        await answer(pool, ChatRequest(CHAT, ("small", "big")))
    assert "on 2 nodes" in caught.value.message and caught.value.status_code == 400
    assert other.requests == []
    assert all(n.health.failures == 0 and n.health.available() for n in pool.nodes)


async def test_after_a_burst_of_bad_requests_the_node_serves_at_once() -> None:
    """One client's failing requests cost the others nothing: the next request is served."""
    flaky = FakeNode("a", reply="fine")
    pool = fake_pool([(flaky, SMALL)])
    flaky.fail_before = NodeProtocolError("a", "stream ended empty", inside_answer=True)
    for _ in range(5):
        with pytest.raises(RequestFailed):
            await answer(pool, ChatRequest(CHAT))
    flaky.fail_before = None
    reply, text = await answer(pool, ChatRequest(CHAT))
    assert (reply.node, text, reply.attempts) == ("a", "fine", ("a",))


async def test_a_node_that_fails_and_is_down_counts_against_it() -> None:
    """The same failure from a node whose health check fails is the node's: its breaker
    counts it and the request moves on to another member."""
    down = refusing("a")
    pool = fake_pool([(down, SMALL), (FakeNode("b", reply="ok"), BIG)])

    async def dead(timeout: float) -> Probe:
        return Probe("down", error="refused")

    down.probe = dead  # type: ignore[method-assign]
    reply, text = await answer(pool, ChatRequest(CHAT, ("small", "big")))
    assert (reply.node, text) == ("b", "ok")
    assert pool.nodes[0].health.failures == 1
