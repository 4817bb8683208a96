"""Build a :class:`backends.pool.Pool` of HTTP nodes from settings."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence

import httpx

from backends.admission import Admission
from backends.config import Member, Node, Policies
from backends.health import HealthTracker
from backends.http import HttpNode
from backends.node import ManagedNode
from backends.pool import Pool


def build_pool(members: Sequence[Member], nodes: Sequence[Node], policies: Policies) -> Pool:
    """One shared httpx client (closed with the pool) and one managed node per config entry."""
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        timeout=httpx.Timeout(policies.timeouts.total, connect=policies.timeouts.connect),
    )
    by_name = {m.name: m for m in members}
    managed = [
        ManagedNode(
            spec=node,
            member=by_name[node.member],
            backend=HttpNode(node, client, policies.timeouts),
            health=HealthTracker(policies.breaker, time.monotonic),
            admission=Admission(node.capacity or 1),
            kind=node.kind,
        )
        for node in nodes
    ]
    return Pool(managed, policies, rng=random.Random(), on_close=client.aclose)
