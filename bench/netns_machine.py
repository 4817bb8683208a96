"""One simulated machine (:class:`Machine`): a network namespace on a :class:`bench.netns.Lan`,
with its processes, sockets and cable; and the system calls behind it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bench.netns_cleanup import (
    IpError,
    ProcessesSurvived,
    ip,
    netns_pids,
    stop_processes,
)

T = TypeVar("T")

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
def kernel_features() -> Iterator[None]:
    """Turn an ``ip`` failure that means "missing privilege or kernel feature" into
    ``NetnsUnavailable``; other failures pass through unchanged."""
    try:
        yield
    except IpError as exc:
        if any(marker in exc.stderr for marker in _MISSING):
            raise NetnsUnavailable(f"{exc}\n{_NEEDS}") from exc
        raise


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
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
