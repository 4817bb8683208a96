"""Which eligible node takes a request.

Nodes not yet tried by this request come first. Among them: for chores (``prefer_idle``) an idle
node of the fastest member; otherwise the most preferred member that has a node. Within that
group, the nodes of the best priority tier (``priority``, lowest first: a desktop's GPU before
an always-on laptop); among them, the least outstanding work per slot (of the node, or of its
host when that is busier); among the equally loaded, a random draw weighted by speed (1 /
recent time to first token), so
a faster node gets more requests but no node is starved: a strict "lowest TTFT wins" would
never send another request to a node whose last figure was a little slower, and its figure
would never be renewed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from backends.base import ChatRequest
from backends.node import ManagedNode

_MIN_TTFT = 0.001


def choose(
    eligible: Sequence[ManagedNode], request: ChatRequest, tried: set[str], rng: random.Random
) -> ManagedNode:
    """Pick one of ``eligible`` (which must not be empty)."""
    fresh = [n for n in eligible if n.name not in tried] or list(eligible)
    group = _fastest_idle(fresh) if request.prefer_idle else _most_preferred(fresh, request)
    group = _best_tier(group)
    least = min(n.load for n in group)
    return _by_speed([n for n in group if n.load == least], rng)


def _by_speed(nodes: list[ManagedNode], rng: random.Random) -> ManagedNode:
    """A random node, weighted by 1 / TTFT (at least 1 ms); a node not measured yet weighs as
    the fastest."""
    known = [max(n.stats.ttft, _MIN_TTFT) for n in nodes if n.stats.ttft]
    fastest = min(known, default=1.0)
    weights = [1 / max(n.stats.ttft or fastest, _MIN_TTFT) for n in nodes]
    return rng.choices(nodes, weights=weights)[0]


def _most_preferred(nodes: list[ManagedNode], request: ChatRequest) -> list[ManagedNode]:
    rank = {name: i for i, name in enumerate(request.members)}
    best = min(rank.get(n.member.name, len(rank)) for n in nodes)
    return [n for n in nodes if rank.get(n.member.name, len(rank)) == best]


def _best_tier(nodes: list[ManagedNode]) -> list[ManagedNode]:
    """The nodes of the lowest ``priority`` among them: a request waits for a busy node of
    a better tier rather than go to a worse one, and reaches a worse tier only when no node
    of a better one can serve (down, breaker open, or already failed this request)."""
    best = min(n.spec.priority for n in nodes)
    return [n for n in nodes if n.spec.priority == best]


def _fastest_idle(nodes: list[ManagedNode]) -> list[ManagedNode]:
    candidates = [n for n in nodes if n.free] or nodes
    best = max(n.member.speed for n in candidates)
    return [n for n in candidates if n.member.speed == best]
