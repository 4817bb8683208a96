"""Host limits: nodes on one machine share it, so the pool never runs more than its limit."""

from __future__ import annotations

import asyncio
import random

import pytest

from backends.admission import Admission
from backends.base import ChatRequest, Reply
from backends.build import build_pool
from backends.config import Host, Member, Node, Policies, Timeouts
from backends.errors import AllNodesFailed, QueueTimeout
from backends.pool import Pool
from backends.selection import choose
from gateway.settings import ConfigError, Settings, _check_references
from tests.fakes import FakeNode, GatedNode, fake_pool, until

pytestmark = pytest.mark.anyio

SMALL, BIG = Member(name="small"), Member(name="big")
CHAT = ChatRequest({"messages": [{"role": "user", "content": "hi"}]})


async def answer(pool: Pool, request: ChatRequest = CHAT) -> Reply:
    async with pool.stream(request) as reply:
        async for _ in reply:
            pass
    return reply


async def test_two_nodes_on_one_host_take_turns() -> None:
    a, b = GatedNode("a"), GatedNode("b")
    host = Admission(1)
    pool = fake_pool([(a, SMALL), (b, BIG)], hosts={"a": host, "b": host})
    first = asyncio.create_task(answer(pool, ChatRequest(CHAT.body, ("small",))))
    await until(lambda: a.active == 1)
    second = asyncio.create_task(answer(pool, ChatRequest(CHAT.body, ("big",))))
    await asyncio.sleep(0.1)
    assert b.requests == [] and host.queued == 1, "the second waits for the host, not the node"
    a.gate.set()
    b.gate.set()
    await first
    reply = await second
    assert reply.queue_wait > 0 and reply.node == "b"
    assert host.in_flight == 0 and host.queued == 0


async def test_nodes_on_other_hosts_run_side_by_side() -> None:
    a, b = GatedNode("a"), GatedNode("b")
    pool = fake_pool([(a, SMALL), (b, SMALL)], hosts={"a": Admission(1), "b": Admission(1)})
    tasks = [asyncio.create_task(answer(pool)) for _ in range(2)]
    await until(lambda: a.active + b.active == 2)
    assert (a.active, b.active) == (1, 1), "both run at once, neither waits for the other"
    a.gate.set()
    b.gate.set()
    replies = await asyncio.gather(*tasks)
    assert sorted(r.node for r in replies) == ["a", "b"]
    assert all(r.queue_wait < 0.05 for r in replies)


async def test_selection_prefers_a_node_whose_host_is_idle() -> None:
    shared, other = Admission(1), Admission(1)
    hosts = {"busy": shared, "idle": shared, "elsewhere": other}
    nodes = [(FakeNode(name), SMALL) for name in hosts]
    pool = fake_pool(nodes, hosts=hosts)
    await shared.acquire(1.0)
    for seed in range(20):
        chosen = choose(pool.nodes, CHAT, set(), random.Random(seed))
        assert chosen.name == "elsewhere", "idle itself, but its host is busy"
    shared.release()


async def test_the_queue_limit_covers_host_and_node() -> None:
    a, b = GatedNode("a"), GatedNode("b")
    host = Admission(1)
    policies = Policies(timeouts=Timeouts(queue=0.2))
    pool = fake_pool([(a, SMALL), (b, BIG)], policies, hosts={"a": host, "b": host})
    first = asyncio.create_task(answer(pool, ChatRequest(CHAT.body, ("small",))))
    await until(lambda: a.active == 1)
    with pytest.raises((QueueTimeout, AllNodesFailed)):
        await answer(pool, ChatRequest(CHAT.body, ("big",)))
    assert host.queued == 0 and b.requests == []
    a.gate.set()
    await first
    assert host.in_flight == 0


def test_member_slots_count_a_shared_host_once() -> None:
    host = Admission(1)
    nodes = [(FakeNode("a"), SMALL), (FakeNode("b"), SMALL), (FakeNode("c"), SMALL)]
    pool = fake_pool(nodes, hosts={"a": host, "b": host})
    assert pool.member_slots("small") == 2, "a and b share one slot; c has its own"


def test_a_node_host_defaults_to_its_url_host() -> None:
    assert Node(name="n", member="m", url="http://10.0.0.7:8080").host_name == "10.0.0.7"
    assert Node(name="n", member="m", url="http://x:1", host="pc").host_name == "pc"


def test_a_host_limit_that_matches_no_node_is_a_config_error() -> None:
    settings = Settings(
        members=(SMALL,),
        nodes=(Node(name="n", member="small", url="http://127.0.0.1:8201"),),
        hosts=(Host(name="laptop", max_active=1),),
    )
    with pytest.raises(ConfigError, match="no node runs on 'laptop'"):
        _check_references(settings)


async def test_build_pool_gives_nodes_on_one_host_one_limit() -> None:
    nodes = [
        Node(name="a", member="small", url="http://127.0.0.1:8201"),
        Node(name="b", member="small", url="http://127.0.0.1:8202"),
        Node(name="c", member="small", url="http://10.0.0.9:8080"),
    ]
    hosts = [Host(name="127.0.0.1", max_active=1)]
    pool = build_pool([SMALL], nodes, Policies(), hosts=hosts)
    try:
        a, b, c = pool.nodes
        assert a.host is not None and a.host is b.host and a.host.capacity == 1
        assert c.host is None
        assert pool.member_slots("small") == 2
    finally:
        await pool.aclose()
