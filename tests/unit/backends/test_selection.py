"""Tests for backends.selection: which eligible node takes a request."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.admission import Admission
from backends.base import ChatRequest, Reply
from backends.config import Breaker, Member, Node
from backends.health import HealthTracker
from backends.http import Probe
from backends.node import ManagedNode
from backends.pool import Pool
from backends.selection import choose
from tests.fakes import FakeNode, fake_pool

CHAT = ChatRequest({"messages": []})
CHORE = ChatRequest({"messages": []}, prefer_idle=True)


class SilentBackend:
    """A backend that is never called: selection only looks at the node's figures."""

    name = "silent"

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[Reply]:
        raise AssertionError("selection must not talk to nodes")
        yield

    async def probe(self, timeout: float) -> Probe:
        raise AssertionError("selection must not probe nodes")

    async def aclose(self) -> None:
        pass


def node(
    name: str,
    member: str = "m",
    *,
    speed: int = 1,
    capacity: int = 1,
    in_flight: int = 0,
    ttft: float | None = None,
) -> ManagedNode:
    managed = ManagedNode(
        spec=Node(name=name, member=member, url=f"http://{name}"),
        member=Member(name=member, speed=speed),
        backend=SilentBackend(),
        health=HealthTracker(Breaker(), clock=lambda: 0.0),
        admission=Admission(capacity),
    )
    managed.admission.in_flight = in_flight
    managed.stats.ttft = ttft
    return managed


def pick(
    nodes: list[ManagedNode], request: ChatRequest = CHAT, tried: set[str] | None = None
) -> str:
    return choose(nodes, request, tried or set(), random.Random(0)).name


class TestLoad:
    def test_less_loaded_node_is_preferred(self) -> None:
        """The node with less outstanding work takes the request."""
        assert pick([node("a", in_flight=1, capacity=2), node("b")]) == "b"

    def test_load_is_measured_per_slot(self) -> None:
        """Two of four slots busy is less loaded than one of one."""
        assert pick([node("a", in_flight=1), node("b", capacity=4, in_flight=2)]) == "b"

    def test_lower_ttft_wins_most_load_ties(self) -> None:
        """Between equally loaded nodes, the one answering faster lately wins most often."""
        nodes = [node("a", ttft=0.9), node("b", ttft=0.2)]
        rng = random.Random(7)
        counts = Counter(choose(nodes, CHAT, set(), rng).name for _ in range(1000))
        assert counts["b"] > 3 * counts["a"]

    def test_a_slightly_slower_node_is_not_starved(self) -> None:
        """A node whose last TTFT was a little higher still gets its share, so its figure is
        renewed (a strict minimum never chose it again)."""
        nodes = [node("a", ttft=0.31), node("b", ttft=0.30)]
        rng = random.Random(7)
        counts = Counter(choose(nodes, CHAT, set(), rng).name for _ in range(1000))
        assert min(counts.values()) > 400


class TestFairness:
    def test_equal_nodes_share_the_load(self) -> None:
        """Repeated choices among equal nodes reach every one of them."""
        nodes = [node("a"), node("b"), node("c")]
        rng = random.Random(1234)
        counts = Counter(choose(nodes, CHAT, set(), rng).name for _ in range(200))
        assert set(counts) == {"a", "b", "c"}
        assert min(counts.values()) >= 20


class TestRetries:
    def test_untried_node_is_preferred_over_a_less_loaded_tried_one(self) -> None:
        """A retry goes to a node this request has not used yet."""
        nodes = [node("a"), node("b", capacity=2, in_flight=2)]
        assert pick(nodes, tried={"a"}) == "b"

    def test_tried_nodes_are_used_when_none_is_left(self) -> None:
        """When every node was tried, the usual order applies again."""
        nodes = [node("a", in_flight=1), node("b")]
        assert pick(nodes, tried={"a", "b"}) == "b"


class TestMembers:
    def test_most_preferred_member_wins_over_load(self) -> None:
        """The first member of the request's list answers even when it is busier."""
        nodes = [node("small-1", "small"), node("big-1", "big", in_flight=1, capacity=2)]
        request = ChatRequest({}, members=("big", "small"))
        assert pick(nodes, request) == "big-1"

    def test_unlisted_member_ranks_last(self) -> None:
        """A node of a member the request does not name is used only as a last resort."""
        nodes = [node("other-1", "other"), node("small-1", "small", in_flight=1)]
        assert pick(nodes, ChatRequest({}, members=("small",))) == "small-1"


class TestPreferIdle:
    def test_idle_node_of_the_fastest_member(self) -> None:
        """Chores go to an idle node of the fastest member."""
        nodes = [
            node("fast-busy", "fast", speed=3, in_flight=1),
            node("fast-idle", "fast", speed=3, capacity=2, in_flight=1),
            node("slow-idle", "slow", speed=1),
        ]
        assert pick(nodes, CHORE) == "fast-idle"

    def test_idle_beats_fast(self) -> None:
        """A slower idle node is better for a chore than a fast one that would queue it."""
        nodes = [node("fast", "fast", speed=3, in_flight=1), node("slow", "slow", speed=1)]
        assert pick(nodes, CHORE) == "slow"

    def test_fastest_when_nothing_is_idle(self) -> None:
        """With every node busy, the fastest member still takes the chore."""
        nodes = [node("fast", "fast", speed=3, in_flight=1), node("slow", "slow", in_flight=1)]
        assert pick(nodes, CHORE) == "fast"

    def test_ignores_member_preference(self) -> None:
        """Chores are not bound to the request's most preferred member."""
        nodes = [node("big", "big", speed=1), node("tiny", "tiny", speed=5)]
        assert pick(nodes, ChatRequest({}, members=("big", "tiny"), prefer_idle=True)) == "tiny"


node_params = st.tuples(
    st.sampled_from(["x", "y", "z"]),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(0, 5),
    st.none() | st.floats(0, 10),
)


@given(
    params=st.lists(node_params, min_size=1, max_size=6),
    tried=st.sets(st.integers(0, 6)),
    members=st.lists(st.sampled_from(["x", "y", "z", "w"]), unique=True),
    prefer_idle=st.booleans(),
    seed=st.integers(0, 2**32),
)
def test_choice_is_always_eligible(
    params: list[tuple[str, int, int, int, float | None]],
    tried: set[int],
    members: list[str],
    prefer_idle: bool,
    seed: int,
) -> None:
    """Whatever the figures, the chosen node is one of the eligible ones, untried if possible."""
    nodes = [
        node(f"n{i}", member, speed=speed, capacity=capacity, in_flight=busy, ttft=ttft)
        for i, (member, speed, capacity, busy, ttft) in enumerate(params)
    ]
    tried_names = {f"n{i}" for i in tried}
    request = ChatRequest({}, members=tuple(members), prefer_idle=prefer_idle)
    chosen = choose(nodes, request, tried_names, random.Random(seed))
    assert any(chosen is n for n in nodes)
    if any(n.name not in tried_names for n in nodes):
        assert chosen.name not in tried_names


class TestLogprobCost:
    def pool_of(self, *kinds: str) -> Pool:
        pool = fake_pool([(FakeNode(f"n{i}"), Member(name="m")) for i in range(len(kinds))])
        for managed, kind in zip(pool.nodes, kinds, strict=True):
            managed.apply_probe(Probe("ready", kind=kind, slots=1))
        return pool

    def test_native_llama_server_nodes_give_log_probs_cheaply(self) -> None:
        assert self.pool_of("llama_server", "llama_server").cheap_logprobs("m")

    def test_one_llama_cpp_server_node_makes_them_costly(self) -> None:
        """A request might land on it, and there log-probs make generation about 6x slower."""
        assert not self.pool_of("llama_server", "llama_cpp_server").cheap_logprobs("m")

    def test_a_member_without_ready_nodes_has_none(self) -> None:
        assert not self.pool_of("llama_server").cheap_logprobs("other")


class TestMemberPace:
    def test_the_fastest_measured_ready_node_gives_the_pace(self) -> None:
        pool = fake_pool([(FakeNode(f"n{i}"), Member(name="m")) for i in range(3)])
        assert pool.member_pace("m") is None, "no node has answered yet"
        pool.nodes[0].stats.record(ttft=1.0, tokens=21, duration=3.0)  # 10 tokens/s
        pool.nodes[1].stats.record(ttft=0.5, tokens=41, duration=1.5)  # 40 tokens/s
        pace = pool.member_pace("m")
        assert pace is not None and (pace.ttft, pace.tokens_per_second) == (0.5, 40.0)
        assert pace.seconds(100) == 3.0
        assert pool.member_pace("other") is None


def tiered(name: str, priority: int, **figures: float) -> ManagedNode:
    managed = node(name, in_flight=int(figures.get("in_flight", 0)))
    managed.spec = Node(name=name, member="m", url=f"http://{name}", priority=priority)
    return managed


class TestTiers:
    def test_the_best_tier_is_used_even_when_busier(self) -> None:
        """The desktop (tier 0) takes the request though the laptop (tier 1) is idle."""
        assert pick([tiered("laptop", 1), tiered("desktop", 0, in_flight=1)]) == "desktop"

    def test_a_worse_tier_takes_over_when_the_better_one_failed(self) -> None:
        nodes = [tiered("laptop", 1), tiered("desktop", 0)]
        assert pick(nodes, tried={"desktop"}) == "laptop"

    def test_a_worse_tier_serves_when_the_better_one_is_not_eligible(self) -> None:
        """The pool passes only nodes that can serve (up, breaker closed): with the desktop
        down, the laptop's tier is the best left."""
        assert pick([tiered("laptop", 1), tiered("nas", 2)]) == "laptop"


@pytest.mark.anyio
async def test_a_node_that_joins_is_probed_and_served_and_one_that_leaves_is_not() -> None:
    """Pool.add probes a new node before it is eligible; Pool.remove takes it out."""
    pool = fake_pool([(FakeNode("a"), Member(name="m"))])
    pool.start_probes()
    joining = fake_pool([(FakeNode("b"), Member(name="m"))]).nodes[0]
    await pool.add(joining)
    assert [n.name for n in pool.nodes] == ["a", "b"] and joining.health.readiness == "ready"
    assert await pool.remove("a") is not None
    async with pool.stream(ChatRequest({"messages": []}, members=("m",))) as reply:
        assert reply.node == "b"
    assert await pool.remove("nobody") is None
    await pool.aclose()
