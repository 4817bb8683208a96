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
import ctypes
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from bench.netns_cleanup import (
    DEFAULT_GRACE,
    IpError,
    ProcessesSurvived,
    TagLock,
    bridge_name,
    destroy_tag,
    ip,
    netns_name,
    netns_pids,
    stop_processes,
    veth_name,
)

T = TypeVar("T")

_SUPERNET = ipaddress.ip_network("10.213.0.0/16")
_MACHINE_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_CLONE_NEWNET = 0x40000000
_MISSING = ("not supported", "Unknown device type", "Operation not permitted", "Permission denied")
_NEEDS = (
    "The netns test harness needs root and a kernel with network namespaces, veth and bridge "
    "support (CONFIG_NET_NS, CONFIG_VETH, CONFIG_BRIDGE)."
)


class NetnsUnavailable(RuntimeError):
    """This host cannot build simulated LANs; the message says what is missing."""


class CommandFailed(subprocess.CalledProcessError):
    """A command run in a machine exited non-zero; unlike its base, says what it printed."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstdout: {self.output}\nstderr: {self.stderr}"


def require_netns() -> None:
    """Return when this process can build LANs, else raise ``NetnsUnavailable`` saying why."""
    if os.geteuid() != 0:
        raise NetnsUnavailable(f"not running as root. {_NEEDS}")
    if shutil.which("ip") is None:
        raise NetnsUnavailable("iproute2's `ip` is not installed (apt-get install iproute2).")
    if not Path("/proc/self/ns/net").exists():
        raise NetnsUnavailable(f"/proc/self/ns/net is missing. {_NEEDS}")


@contextlib.contextmanager
def _kernel_features() -> Iterator[None]:
    """Turn an ``ip`` failure that means "missing privilege or kernel feature" into
    ``NetnsUnavailable``; other failures pass through unchanged."""
    try:
        yield
    except IpError as exc:
        if any(marker in exc.stderr for marker in _MISSING):
            raise NetnsUnavailable(f"{exc}\n{_NEEDS}") from exc
        raise


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Ignore Ctrl-C while cleaning up (a second one would leave namespaces behind); only the
    main thread may change signal handlers, elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def in_netns(netns: str, make: Callable[[], T]) -> T:
    """Return ``make()`` called on a fresh thread that entered namespace ``netns`` and ends
    right after, so no other thread ever changes namespace. A socket keeps the namespace it
    was created in, which is what makes ``Machine.new_socket`` work."""
    results: list[T] = []
    errors: list[BaseException] = []

    def enter_and_make() -> None:
        try:
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            results.append(make())
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=enter_and_make, name=f"netns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def wait_for_tcp(address: str, port: int, timeout: float = 10.0) -> None:
    """Return once ``address:port`` accepts a TCP connection from the root namespace; raise
    ``TimeoutError`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((address, port), timeout=0.5).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {address}:{port}") from exc
            time.sleep(0.05)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def _echo_request(ident: int) -> bytes:
    header = struct.pack("!BBHHH", 8, 0, 0, ident, 1)
    payload = b"booagent-netns"
    return struct.pack("!BBHHH", 8, 0, _checksum(header + payload), ident, 1) + payload


def _is_echo_reply(packet: bytes, ident: int) -> bool:
    icmp = packet[(packet[0] & 0x0F) * 4 :]
    kind, _code, _sum, got = struct.unpack("!BBHH", icmp[:6])
    return bool(kind == 0 and got == ident)


class Machine:
    """One simulated machine: a network namespace with ``eth0`` at ``address`` on the LAN.

    Processes it starts are tracked so ``kill()`` (and the LAN's exit) can stop them; each one
    leads its own process group, so ``os.killpg(proc.pid, sig)`` reaches its children too.
    """

    def __init__(self, name: str, netns: str, veth: str, address: str, grace: float) -> None:
        self.name = name
        self.netns = netns
        self.veth = veth
        self.address = address
        self._grace = grace
        self._procs: list[subprocess.Popen[Any]] = []

    def __repr__(self) -> str:
        return f"Machine({self.name!r}, netns={self.netns!r}, address={self.address!r})"

    def command(self, argv: Sequence[str], *, core: int | None = None) -> list[str]:
        """The argv that runs ``argv`` inside this machine, pinned to ``core`` when given
        (``taskset`` comes first, so even ``ip netns exec`` runs on that core)."""
        inside = ["ip", "netns", "exec", self.netns, *argv]
        if core is None:
            return inside
        available = os.sched_getaffinity(0)
        if core not in available:
            raise ValueError(f"core {core} is not one of this process's cores {sorted(available)}")
        return ["taskset", "-c", str(core), *inside]

    def run(
        self,
        argv: Sequence[str],
        *,
        core: int | None = None,
        env: Mapping[str, str] | None = None,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in this machine, in a new session (own process group), and return
        it; ``env`` adds to (not replaces) this process's environment."""
        merged = None if env is None else {**os.environ, **env}
        proc = subprocess.Popen(
            self.command(argv, core=core), env=merged, start_new_session=True, **popen_kwargs
        )
        self._procs.append(proc)
        return proc

    def check_output(
        self, argv: Sequence[str], *, core: int | None = None, timeout: float = 30.0
    ) -> str:
        """Run a short command in this machine and return its stdout; raise ``CommandFailed``
        (with its output) when it exits non-zero, ``subprocess.TimeoutExpired`` after
        ``timeout`` seconds."""
        command = self.command(argv, core=core)
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise CommandFailed(done.returncode, command, done.stdout, done.stderr)
        return done.stdout

    def new_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A socket created inside this machine: it binds, connects and sends as the machine."""
        return in_netns(self.netns, lambda: socket.socket(family, kind, proto))

    def connect(self, address: str, port: int, timeout: float = 5.0) -> socket.socket:
        """A TCP connection from this machine to ``address:port``; the caller closes it."""
        sock = self.new_socket()
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        return sock

    def ping(self, address: str, timeout: float = 2.0) -> bool:
        """Whether one ICMP echo from this machine to ``address`` is answered within
        ``timeout`` seconds (a raw socket: no dependency on iputils)."""
        ident = int.from_bytes(os.urandom(2), "big")
        deadline = time.monotonic() + timeout
        with self.new_socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
            try:
                sock.sendto(_echo_request(ident), (address, 0))
            except OSError:  # no route to it
                return False
            while (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    packet, (source, _) = sock.recvfrom(2048)
                except TimeoutError:
                    return False
                if source == address and _is_echo_reply(packet, ident):
                    return True
        return False

    def pids(self) -> set[int]:
        """Every process inside this machine now, whoever started it."""
        return netns_pids(self.netns)

    def cut(self) -> None:
        """Pull the machine's cable: set the bridge end of its veth down. Frames stop in both
        directions without any packet that could tell a peer (no RST, no ICMP), so open TCP
        connections hang until their timeouts, as when a machine loses power or its cable;
        the machine itself sees ``eth0`` lose carrier. Idempotent."""
        ip("link", "set", self.veth, "down")

    def restore(self) -> None:
        """Plug the cable back in: stalled connections resume with TCP's next retransmission
        (up to a few seconds later, because of its exponential backoff). Idempotent."""
        ip("link", "set", self.veth, "up")

    def kill(self) -> None:
        """Stop every process in this machine: SIGTERM (to the groups of the processes it
        started and to every pid in the namespace), SIGKILL after the grace period; reap the
        ones it started and close their pipes. Raise if one survives SIGKILL."""
        groups = [proc.pid for proc in self._procs if proc.poll() is None]

        def still_running() -> set[int]:
            return {p.pid for p in self._procs if p.poll() is None} | self.pids()

        survivors = stop_processes(still_running, self._grace, groups)
        for proc in self._procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        self._procs.clear()
        if survivors:
            raise ProcessesSurvived(f"{sorted(survivors)} in {self.netns} survived SIGKILL")


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
    with _kernel_features():
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
            with _kernel_features():
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
        with _kernel_features():
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
        with _sigint_deferred():
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
