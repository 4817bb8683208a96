"""DNS-SD over mDNS (``zeroconf``): node agents announce themselves, the gateway listens.

A node announces the service ``<name>._booagent._tcp.local.`` with TXT properties: ``name``,
``members`` (``member:slots:n_ctx`` joined by ``,``), ``fp`` (SHA-256 of its certificate,
which the gateway checks against the certificate it is shown), ``prio`` (its priority tier)
and ``v``. mDNS only advertises: a node serves the cluster only once the gateway has checked
it over mutual TLS (:mod:`backends.discovery`).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from zeroconf import InterfaceChoice, IPVersion, ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

SERVICE = "_booagent._tcp.local."


@dataclass(frozen=True, slots=True)
class Announced:
    """A node agent as its announcement describes it."""

    name: str
    addresses: tuple[str, ...]
    port: int
    members: tuple[tuple[str, int, int], ...]
    fingerprint: str
    priority: int = 0
    version: str = "0"

    def properties(self) -> dict[str, str]:
        members = ",".join(f"{m}:{slots}:{ctx}" for m, slots, ctx in self.members)
        return {
            "name": self.name,
            "members": members,
            "fp": self.fingerprint,
            "prio": str(self.priority),
            "v": self.version,
        }

    def info(self) -> ServiceInfo:
        return ServiceInfo(
            SERVICE,
            f"{self.name}.{SERVICE}",
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=self.port,
            properties=self.properties(),
            server=f"{self.name}.local.",
        )

    @classmethod
    def of(cls, info: ServiceInfo) -> Announced | None:
        """The announcement in ``info``; None when it is not one of ours or is malformed."""
        props = {
            k.decode(errors="replace"): (v or b"").decode(errors="replace")
            for k, v in info.properties.items()
        }
        try:
            members = tuple(_member(part) for part in props["members"].split(",") if part)
            return cls(
                name=props["name"],
                addresses=tuple(info.parsed_addresses(IPVersion.V4Only)),
                port=int(info.port or 0),
                members=members,
                fingerprint=props["fp"],
                priority=int(props.get("prio", "0")),
                version=props.get("v", "0"),
            )
        except (KeyError, ValueError):
            return None


def zeroconf_on(interfaces: Sequence[str] | None) -> AsyncZeroconf:
    """mDNS over IPv4 on ``interfaces`` (addresses), or on every interface."""
    chosen: list[str] | InterfaceChoice = list(interfaces) if interfaces else InterfaceChoice.All
    return AsyncZeroconf(interfaces=chosen, ip_version=IPVersion.V4Only)


def _member(text: str) -> tuple[str, int, int]:
    name, slots, ctx = text.rsplit(":", 2)
    return name, int(slots), int(ctx)


class Announcer:
    """Keeps one announcement registered while open, sent again every ``every`` seconds (a
    gateway that forgot the node while the network was down hears of it again at once, not
    after the browser's query backoff); says goodbye when closed."""

    def __init__(
        self, announced: Announced, interfaces: Sequence[str] | None = None, every: float = 15.0
    ) -> None:
        self._announced = announced
        self._every = every
        self._repeat: asyncio.Task[None] | None = None
        self._zeroconf = zeroconf_on(interfaces)

    async def __aenter__(self) -> Announcer:
        info = self._announced.info()
        await self._zeroconf.async_register_service(info)
        self._repeat = asyncio.create_task(self._announce_again(info))
        return self

    async def _announce_again(self, info: ServiceInfo) -> None:
        while True:
            await asyncio.sleep(self._every)
            await self._zeroconf.async_update_service(info)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._repeat is not None:
            self._repeat.cancel()
            await asyncio.gather(self._repeat, return_exceptions=True)
        await self._zeroconf.async_unregister_all_services()
        await self._zeroconf.async_close()
