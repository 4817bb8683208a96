"""The gateway follows the cluster: node agents that announce themselves join the pool.

An announcement (:mod:`backends.announce`) only says where to look. Before a node agent
serves, the gateway asks it ``GET /info`` over mutual TLS: the agent's certificate must be
signed by the cluster CA for the announced name, and be the certificate whose fingerprint
was announced; the agent in turn accepts only the gateway's certificate (signed by the same
CA). Then each member it serves that the config declares becomes a node of the pool
(``<agent>/<member>``, its URL ``https://<address>:<port>/m/<member>``, its slots and
priority). A refused agent is logged with the reason, once per announcement.

A node agent leaves the pool when it says goodbye (mDNS), or when all its nodes have been
down for ``forget_after`` seconds (a machine switched off says nothing); one that left for
being down is checked again every few seconds and rejoins when it answers (its announcement
has not changed, so the browser reports nothing). Requests it is answering carry on or fail
over as when a node dies. Static nodes are never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from zeroconf import ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from backends.announce import SERVICE, Announced, zeroconf_on
from backends.config import Cluster, Node
from backends.errors import NodeError
from backends.http_errors import map_errors
from backends.mtls import TlsFiles, der_fingerprint
from backends.node import ManagedNode
from backends.pool import Pool

_log = structlog.get_logger("booagent.discovery")
_CHECK_TIMEOUT = 5.0


class Refused(Exception):
    """A node agent that may not join; the message says why."""


@dataclass(slots=True)
class Joined:
    """A node agent in the pool: its announcement and the nodes it added."""

    announced: Announced
    nodes: tuple[str, ...]
    down_since: float | None = None


@dataclass(slots=True)
class Discovery:
    """Browses for node agents while open, adding and removing their nodes in ``pool``."""

    pool: Pool
    cluster: Cluster
    tls: TlsFiles
    session: aiohttp.ClientSession
    interfaces: list[str] | None = None
    clock: Callable[[], float] = time.monotonic
    joined: dict[str, Joined] = field(default_factory=dict)
    dormant: dict[str, Announced] = field(default_factory=dict)
    """Agents that left for being down (not by goodbye): checked again now and then, since
    a machine back on the network re-announces nothing new that a browser would report."""
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _zeroconf: AsyncZeroconf | None = None
    _browser: AsyncServiceBrowser | None = None
    _refused: dict[str, str] = field(default_factory=dict)

    async def __aenter__(self) -> Discovery:
        self._zeroconf = zeroconf_on(self.interfaces)
        self._browser = AsyncServiceBrowser(
            self._zeroconf.zeroconf, SERVICE, handlers=[self._on_change]
        )
        self._spawn(self._expire())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._browser is not None:
            await self._browser.async_cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._zeroconf is not None:
            await self._zeroconf.async_close()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_change(
        self,
        zeroconf: Zeroconf,
        service_type: str,
        name: str,
        state_change: ServiceStateChange,
    ) -> None:
        if state_change is ServiceStateChange.Removed:
            agent = name.removesuffix(f".{SERVICE}")
            self.dormant.pop(agent, None)
            self._spawn(self.leave(agent, "said goodbye"))
        else:
            self._spawn(self._look(name))

    async def _look(self, service: str) -> None:
        assert self._zeroconf is not None
        info = AsyncServiceInfo(SERVICE, service)
        if not await info.async_request(self._zeroconf.zeroconf, 3000):
            return
        announced = Announced.of(info)
        if announced is None:
            _log.warning("node_announcement_malformed", service=service)
            return
        await self.consider(announced)

    async def consider(self, announced: Announced, *, quiet: bool = False) -> bool:
        """Check an announced agent and add its nodes, unless it is in already as announced;
        True when it is in. ``quiet``: a refusal is not logged (a dormant agent's retry)."""
        current = self.joined.get(announced.name)
        if current is not None and current.announced == announced:
            return True
        if current is not None:
            await self.leave(announced.name, "announced again with changes")
        try:
            nodes = await self._checked_nodes(announced)
        except Refused as exc:
            if not quiet:
                self._refuse(announced, str(exc))
            return False
        for node in nodes:
            await self.pool.add(self._spawn_node(node))
        self.joined[announced.name] = Joined(announced, tuple(n.name for n in nodes))
        self._refused.pop(announced.name, None)
        self.dormant.pop(announced.name, None)
        _log.info("node_joined", node=announced.name, nodes=[n.name for n in nodes],
                  address=f"{nodes[0].url.split('/m/')[0]}")  # fmt: skip
        return True

    def _spawn_node(self, node: Node) -> ManagedNode:
        if self.pool.spawn is None:
            raise RuntimeError("the pool cannot make nodes (built without a node factory)")
        return self.pool.spawn(node)

    def _refuse(self, announced: Announced, why: str) -> None:
        if self._refused.get(announced.name) != why:
            _log.warning("node_refused", node=announced.name, reason=why)
        self._refused[announced.name] = why

    async def _checked_nodes(self, announced: Announced) -> list[Node]:
        allow = self.cluster.allow
        if allow and announced.name not in allow:
            raise Refused(f"not in cluster.allow ({', '.join(allow)})")
        base, info = await self._verified(announced)
        declared = set(self.pool.members)
        nodes = [
            Node(
                name=f"{announced.name}/{m['member']}",
                member=m["member"],
                url=f"{base}/m/{m['member']}",
                capacity=int(m["slots"]),
                tls_name=announced.name,
                priority=int(info.get("priority", announced.priority)),
                host=announced.name,
            )
            for m in info.get("members", [])
            if m.get("member") in declared
        ]
        if not nodes:
            served = ", ".join(str(m.get("member")) for m in info.get("members", []))
            raise Refused(f"serves no member the config declares (it serves: {served})")
        return nodes

    async def _verified(self, announced: Announced) -> tuple[str, dict[str, Any]]:
        """The agent's base URL and ``/info``, from the first address that passes the checks."""
        reasons = []
        for address in announced.addresses:
            base = f"https://{address}:{announced.port}"
            try:
                return base, await self._info(base, announced)
            except Refused as exc:
                reasons.append(f"{address}: {exc}")
        raise Refused("; ".join(reasons) or "announced no address")

    async def _info(self, base: str, announced: Announced) -> dict[str, Any]:
        try:
            with map_errors(announced.name):
                async with asyncio.timeout(_CHECK_TIMEOUT):
                    shown = await self._shown_fingerprint(base, announced.name)
                    async with self.session.get(
                        f"{base}/info", ssl=self.tls.context, server_hostname=announced.name
                    ) as response:
                        info = await response.json() if response.status == 200 else None
        except NodeError as exc:
            raise Refused(exc.message) from exc
        except (TimeoutError, ValueError, aiohttp.ContentTypeError) as exc:
            raise Refused(f"no usable answer to GET /info: {exc or 'timed out'}") from exc
        if shown != announced.fingerprint:
            raise Refused("its certificate is not the one it announced (fingerprint differs)")
        if not isinstance(info, dict):
            raise Refused("no usable answer to GET /info")
        return info

    async def _shown_fingerprint(self, base: str, name: str) -> str:
        """The fingerprint of the certificate the agent shows (after the CA and name check)."""
        host, _, port = base.removeprefix("https://").rpartition(":")
        try:
            _, writer = await asyncio.open_connection(
                host, int(port), ssl=self.tls.context, server_hostname=name
            )
        except ssl.SSLCertVerificationError as exc:
            raise Refused(f"refused its TLS certificate: {exc.verify_message}") from exc
        except (OSError, ssl.SSLError) as exc:
            raise Refused(f"cannot connect: {exc}") from exc
        try:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        finally:
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        return der_fingerprint(der) if der else ""

    async def leave(self, name: str, why: str) -> None:
        """Take a node agent's nodes out of the pool."""
        joined = self.joined.pop(name, None)
        if joined is None:
            return
        for node in joined.nodes:
            await self.pool.remove(node)
        _log.info("node_left", node=name, nodes=list(joined.nodes), reason=why)

    async def _expire(self) -> None:
        """Every few seconds: agents whose every node has been down ``forget_after`` leave."""
        while True:
            await asyncio.sleep(min(5.0, self.cluster.forget_after / 3))
            await self.expire_once()

    async def expire_once(self) -> None:
        for announced in list(self.dormant.values()):
            await self.consider(announced, quiet=True)
        now = self.clock()
        states = {n.name: n.health.readiness for n in self.pool.nodes}
        for name, joined in list(self.joined.items()):
            down = all(states.get(node) == "down" for node in joined.nodes)
            if not down:
                joined.down_since = None
                continue
            joined.down_since = joined.down_since or now
            if now - joined.down_since >= self.cluster.forget_after:
                self.dormant[name] = joined.announced
                await self.leave(name, f"down for {self.cluster.forget_after:g} s")
