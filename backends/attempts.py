"""What one request has tried so far, for the pool's retries and hand-overs."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from backends.errors import ContextLengthExceeded, NodeError, NodeOverloaded, NodeTimeout
from backends.node import ManagedNode


@dataclass(slots=True)
class Attempts:
    """What one request has tried so far; decides where the next attempt may go. Private to
    one call of :meth:`backends.pool.Pool.stream`, which returns what it holds in the
    :class:`backends.base.Reply`."""

    order: list[str] = field(default_factory=list)
    tried: set[str] = field(default_factory=set)
    excluded: set[str] = field(default_factory=set)
    failures: list[NodeError] = field(default_factory=list)
    min_ctx: int = 0
    retry_after: float = 0.0
    queue_wait: float = 0.0
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    refusals: list[NodeError] = field(default_factory=list)
    """Failures that were the request's own (the node stayed healthy): after one, only other
    nodes of the same member are tried."""
    member: str | None = None

    def start(self, node: ManagedNode) -> None:
        self.order.append(node.name)
        self.tried.add(node.name)

    def refused(self, node: ManagedNode, error: NodeError) -> None:
        """``node`` failed the request inside its answer but is healthy: the request's fault."""
        self.failures.append(error)
        self.refusals.append(error)
        self.member = node.member.name

    def record(self, node: ManagedNode, error: NodeError) -> None:
        self.failures.append(error)
        if isinstance(error, NodeTimeout):
            self.excluded.add(node.name)
        if isinstance(error, ContextLengthExceeded):
            self.min_ctx = node.member.n_ctx + 1
        if isinstance(error, NodeOverloaded) and error.retry_after:
            self.retry_after = max(self.retry_after, error.retry_after)
