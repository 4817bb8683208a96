"""The failover pool returns what it did: a reply that carries where the answer came from."""

from __future__ import annotations

import asyncio

import pytest

from backends.base import ChatRequest, Reply
from backends.config import Member
from backends.errors import NodeUnreachable
from backends.pool import Pool
from tests.fakes import FakeNode, fake_pool

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
    """A request that waited for the node's only slot says how long."""
    node = FakeNode("a", reply="one two three", delay=0.05)
    pool = fake_pool([(node, SMALL)])
    first = asyncio.create_task(answer(pool, ChatRequest(CHAT)))
    await asyncio.sleep(0.01)
    reply, _ = await answer(pool, ChatRequest(CHAT))
    await first
    assert reply.queue_wait >= 0.1


async def test_the_first_token_of_a_whole_answer_is_its_first_chunk() -> None:
    """For a buffered request the pool reads the whole answer before committing, but the
    first-token time it reports (and learns for selection) is that of the first content."""
    node = FakeNode("a", reply="one two three four five", delay=0.04)
    pool = fake_pool([(node, SMALL)])
    loop = asyncio.get_running_loop()
    started = loop.time()
    reply, _ = await answer(pool, ChatRequest(CHAT, buffered=True))
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
