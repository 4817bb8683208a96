"""Which eligible node takes a request.

Nodes not yet tried by this request come first. Among them: for chores (``prefer_idle``) an idle
node of the fastest member; otherwise the most preferred member that has a node. Within that
group, the least outstanding work per slot (of the node, or of its host when that is busier),
then the lowest recent time to first token, then a
random draw, so equal nodes share the load instead of the first one taking it all.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from backends.base import ChatRequest
from backends.node import ManagedNode


def choose(
    eligible: Sequence[ManagedNode], request: ChatRequest, tried: set[str], rng: random.Random
) -> ManagedNode:
    """Pick one of ``eligible`` (which must not be empty)."""
    fresh = [n for n in eligible if n.name not in tried] or list(eligible)
    group = _fastest_idle(fresh) if request.prefer_idle else _most_preferred(fresh, request)
    return min(group, key=lambda n: (n.load, n.stats.ttft or 0.0, rng.random()))


def _most_preferred(nodes: list[ManagedNode], request: ChatRequest) -> list[ManagedNode]:
    rank = {name: i for i, name in enumerate(request.members)}
    best = min(rank.get(n.member.name, len(rank)) for n in nodes)
    return [n for n in nodes if rank.get(n.member.name, len(rank)) == best]


def _fastest_idle(nodes: list[ManagedNode]) -> list[ManagedNode]:
    candidates = [n for n in nodes if n.free] or nodes
    best = max(n.member.speed for n in candidates)
    return [n for n in candidates if n.member.speed == best]
