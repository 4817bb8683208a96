"""Build a :class:`backends.pool.Pool` of HTTP nodes from settings."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import aiohttp

from backends.admission import Admission
from backends.config import Host, Member, Node, Policies
from backends.errors import UnknownModel
from backends.fit import Counter, local_vocab
from backends.health import HealthTracker
from backends.http import HttpNode
from backends.models import lookup
from backends.mtls import TlsFiles
from backends.node import ManagedNode
from backends.pool import Pool
from backends.tooling import Dialect, style_of


def node_session() -> aiohttp.ClientSession:
    """The HTTP session the nodes share; call it inside the loop that will use it.

    No connection limit and no timeouts: each node applies its own limits. Idle connections are
    dropped after 4 s, before the nodes drop theirs (5 s by default in llama-server's cpp-httplib
    and in the uvicorn that runs llama_cpp.server), so a reused connection is not one being
    closed.
    """
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
    return aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(), trust_env=False
    )


NodeFactory = Callable[[Node], ManagedNode]


def node_factory(
    members: Sequence[Member],
    session: aiohttp.ClientSession,
    policies: Policies,
    hosts: Sequence[Host] = (),
    tls: TlsFiles | None = None,
) -> NodeFactory:
    """Makes the pool's managed node for a node spec (at start-up, and when one joins)."""
    by_name = {m.name: m for m in members}
    limits = {h.name: Admission(h.max_active) for h in hosts}

    def managed(node: Node) -> ManagedNode:
        member = by_name[node.member]
        return ManagedNode(
            spec=node,
            member=member,
            backend=HttpNode(node, session, policies.timeouts, style=style_of(member), tls=tls),
            health=HealthTracker(policies.breaker, time.monotonic),
            admission=Admission(node.capacity or 1),
            kind=node.kind,
            host=limits.get(node.host_name),
        )

    return managed


def build_pool(
    members: Sequence[Member],
    nodes: Sequence[Node],
    policies: Policies,
    hosts: Sequence[Host] = (),
    models_dir: Path | None = None,
    tls: TlsFiles | None = None,
) -> Pool:
    """One shared session (closed with the pool) and one managed node per config entry; nodes
    on a host with a limit share one admission queue for it; members whose GGUF file is in
    ``models_dir`` count prompts with its vocabulary; ``https://`` nodes are reached with the
    cluster's mutual TLS (``tls``). The pool's ``spawn`` makes nodes that join later.

    Call it inside the running loop that will use the pool: the session is bound to it.
    """
    session = node_session()
    spawn = node_factory(members, session, policies, hosts, tls)
    vocab = _vocabularies(members, models_dir) if models_dir is not None else {}
    closing = partial(close_session, session)
    return Pool(
        [spawn(node) for node in nodes], policies, rng=random.Random(), on_close=closing,
        vocab=vocab, members=members, spawn=spawn,
    )  # fmt: skip


def _vocabularies(members: Sequence[Member], models_dir: Path) -> dict[str, Counter]:
    """The members whose model file is here, with a counter over its vocabulary."""
    found: dict[str, Counter] = {}
    for member in members:
        if member.model is None:
            continue
        try:
            path = models_dir / lookup(member.model).filename
        except UnknownModel:
            continue
        vocab = local_vocab(path, Dialect("llama_cpp_server", style_of(member)).prepared)
        if vocab is not None:
            found[member.name] = vocab
    return found


async def close_session(session: aiohttp.ClientSession) -> None:
    """Close the session, then yield once to the loop: closing a connection schedules its
    transport's end for the next iteration, and a loop stopped before that leaves the socket
    to be closed at garbage collection (aiohttp's "graceful shutdown" advice)."""
    await session.close()
    await asyncio.sleep(0)
