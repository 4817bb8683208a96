"""Simulated machines for tests: network namespaces joined by a bridge, on this one host.

A ``Lan`` is a Linux bridge in the root namespace with a private /24 (``10.213.<tag>.0/24``);
each ``Machine`` is a network namespace wired to it by a veth pair (``eth0`` inside), with its
own address, loopback up, and a route for 224.0.0.0/4 through ``eth0`` (a machine has no
default route, so a multicast sender that does not name an interface would otherwise get
ENETUNREACH). The bridge floods multicast (snooping off), so mDNS reaches every machine.

Where the gateway lives: the root namespace holds ``lan.host_address`` (``.1``) on the bridge,
so a gateway running in the test process reaches every machine and they reach it. A gateway
that discovers nodes by mDNS belongs in a machine of its own (``lan.add_machine("gw")``):
multicast sent from the root namespace follows the host's default route, off the host.

    with Lan() as lan:
        a, b = lan.machines(2)
        a.run([sys.executable, "-m", "http.server", "--bind", a.address, "8000"], core=1)
        wait_for_tcp(a.address, 8000)
        conn = b.connect(a.address, 8000)   # a socket living in machine b
        a.cut()                             # cable pulled: conn hangs (no RST)
        a.restore()                         # conn resumes

Leaving the context (normally, by exception, or by KeyboardInterrupt) kills every process in
the LAN's namespaces (SIGTERM, SIGKILL after ``grace`` seconds) and deletes the namespaces,
veths and bridge. A run that dies before that (SIGKILL, power loss of the container) leaves a
lock file without an owner, and the session fixture ``netns_sweep`` (or
``python bench/netns_cleanup.py``) removes its leftovers; see ``bench/netns_cleanup.py`` for
names and ownership. Test modules import the fixtures they use from ``tests.netns``::

    from tests.netns import lan_fixture, netns_sweep_fixture  # noqa: F401

Everything here needs root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN); without
it, or without kernel support, ``NetnsUnavailable`` says what is missing instead of a skip.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import re
from types import TracebackType

from bench.netns_cleanup import (
    DEFAULT_GRACE,
    IpError,
    ProcessesSurvived,
    TagLock,
    bridge_name,
    destroy_tag,
    ip,
    netns_name,
    veth_name,
)
from bench.netns_machine import (
    CommandFailed,
    Machine,
    NetnsUnavailable,
    in_netns,
    kernel_features,
    require_netns,
    sigint_deferred,
    wait_for_tcp,
)

__all__ = [
    "CommandFailed",
    "Lan",
    "Machine",
    "NetnsUnavailable",
    "in_netns",
    "require_netns",
    "wait_for_tcp",
]

_SUPERNET = ipaddress.ip_network("10.213.0.0/16")
_MACHINE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")


def _routes() -> list[tuple[ipaddress.IPv4Network, str]]:
    """The root namespace's IPv4 routes (the default route excepted) with their devices."""
    out = ip("-j", "-4", "route", "show").strip()
    routes = json.loads(out) if out else []
    return [
        (ipaddress.IPv4Network(r["dst"], strict=False), r.get("dev", ""))
        for r in routes
        if r["dst"] != "default"
    ]


def _routed_elsewhere(tag: int, routes: list[tuple[ipaddress.IPv4Network, str]]) -> bool:
    """Whether the host routes part of the tag's subnet through something other than the
    tag's own bridge (which a dead run may have left, and a claim removes)."""
    return any(_subnet(tag).overlaps(net) for net, dev in routes if dev != bridge_name(tag))


def _subnet(tag: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(_SUPERNET.network_address) + (tag << 8), 24))


def _claim_tag(first: int, grace: float) -> TagLock:
    """Own a free tag, starting the search at ``first``: lock it, then create its bridge
    (whose name also can exist only once). A tag whose lock file outlived its owner has its
    leftovers removed first; one whose subnet the host routes, or whose bridge name is taken
    by something not ours, is skipped."""
    routes = _routes()
    for offset in range(254):
        tag = (first - 1 + offset) % 254 + 1
        if _routed_elsewhere(tag, routes):
            continue
        lock = TagLock.try_acquire(tag, create=True)
        if lock is None:
            continue
        try:
            if not lock.created:
                destroy_tag(tag, grace)
            _create_bridge(bridge_name(tag))
        except BaseException as exc:
            lock.release(unlink=lock.created)
            if _tag_unavailable(exc):
                continue
            raise
        return lock
    raise NetnsUnavailable(f"no free tag: every {_SUPERNET} /24 is in use")


def _tag_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` only means "try another tag": the bridge name is used by something
    that is not ours, or a dead run's process in that tag survived SIGKILL."""
    exists = isinstance(exc, IpError) and "File exists" in exc.stderr
    return exists or isinstance(exc, ProcessesSurvived)


def _create_bridge(name: str) -> None:
    """A bridge that forwards at once (no STP delay) and floods multicast: with snooping on
    and no IGMP querier on the LAN, learned group memberships would expire after a few
    minutes and traffic to those groups stop (224.0.0.x, mDNS included, is flooded either
    way). It also asks not to pass bridged frames to iptables, though the host-wide
    ``net.bridge.bridge-nf-call-*`` sysctls, when 1, still do."""
    with kernel_features():
        ip(
            "link", "add", name, "type", "bridge", "forward_delay", "0", "mcast_snooping", "0",
            "nf_call_iptables", "0", "nf_call_arptables", "0",
        )  # fmt: skip


def _wire_machine(netns: str, veth: str, bridge: str, cidr: str) -> None:
    """Namespace ``netns`` with ``eth0`` at ``cidr``, its peer ``veth`` enslaved to ``bridge``,
    loopback up, and multicast routed to ``eth0`` (there is no default route)."""
    ip("netns", "add", netns)
    ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
    ip("link", "set", veth, "master", bridge, "up")
    ip("-n", netns, "link", "set", "lo", "up")
    ip("-n", netns, "addr", "add", cidr, "dev", "eth0")
    ip("-n", netns, "link", "set", "eth0", "multicast", "on", "up")
    ip("-n", netns, "route", "add", "224.0.0.0/4", "dev", "eth0")


class Lan:
    """A bridge with a private /24 and the machines on it; a context manager (sync or async).

    ``first_tag`` picks where the search for a free subnet starts (default: from the pid, so
    parallel runs rarely even try the same one; locks make collisions impossible anyway).
    ``grace`` is how long processes get between SIGTERM and SIGKILL at exit.
    """

    def __init__(self, *, grace: float = DEFAULT_GRACE, first_tag: int | None = None) -> None:
        self._grace = grace
        self._first_tag = first_tag if first_tag is not None else os.getpid() % 254 + 1
        self._lock: TagLock | None = None
        self._machines: dict[str, Machine] = {}

    def __enter__(self) -> Lan:
        require_netns()
        self._lock = _claim_tag(self._first_tag, self._grace)
        try:
            with kernel_features():
                ip("addr", "add", f"{self.host_address}/24", "dev", self.bridge)
                ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Lan:
        return await asyncio.to_thread(self.__enter__)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.close)

    @property
    def tag(self) -> int:
        """This LAN's tag (1..254): its names and subnet derive from it."""
        if self._lock is None:
            raise RuntimeError("the Lan is not open: use it as a context manager")
        return self._lock.tag

    @property
    def bridge(self) -> str:
        return bridge_name(self.tag)

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return _subnet(self.tag)

    @property
    def host_address(self) -> str:
        """The root namespace's address on the bridge (``.1``): where a gateway running in
        the test process is reached from the machines."""
        return str(self.subnet.network_address + 1)

    @property
    def members(self) -> list[Machine]:
        """The machines added so far, in order."""
        return list(self._machines.values())

    def add_machine(self, name: str) -> Machine:
        """A new machine called ``name`` (lowercase letters, digits, dashes) at the next free
        address (``.2`` upwards)."""
        if not _MACHINE_NAME.fullmatch(name) or name in self._machines:
            raise ValueError(f"machine name {name!r} is invalid or already used")
        index = len(self._machines) + 2
        if index > 254:
            raise ValueError("a /24 holds 253 machines")
        netns, veth = netns_name(self.tag, name), veth_name(self.tag, index)
        address = str(self.subnet.network_address + index)
        with kernel_features():
            _wire_machine(netns, veth, self.bridge, f"{address}/24")
        machine = Machine(name, netns, veth, address, self._grace)
        self._machines[name] = machine
        return machine

    def machines(self, n: int) -> list[Machine]:
        """``n`` new machines named ``m<i>``, numbered on from those already present."""
        first = len(self._machines) + 1
        return [self.add_machine(f"m{i}") for i in range(first, first + n)]

    def close(self) -> None:
        """Kill every process in the namespaces, delete namespaces, veths and bridge, and
        give the tag up. Every step runs even when an earlier one fails; the lock file stays
        when something failed, so the next sweep retries. Idempotent."""
        lock, self._lock = self._lock, None
        if lock is None:
            return
        with sigint_deferred():
            removed = False
            try:
                with contextlib.ExitStack() as steps:
                    steps.callback(destroy_tag, lock.tag, self._grace)
                    for machine in self._machines.values():
                        steps.callback(machine.kill)
                removed = True
            finally:
                self._machines.clear()
                lock.release(unlink=removed)
