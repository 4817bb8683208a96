"""The simulated-machines harness (tests/netns.py): reachability, isolation, mDNS, cable
cuts, core pinning, and that nothing outlives a LAN or a crashed run."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bench.netns_cleanup import (
    bridge_name,
    ip,
    is_alive,
    list_links,
    list_netns,
    lock_path,
    netns_name,
    sweep,
)
from tests.netns import (
    Lan,
    Machine,
    lan_fixture,  # noqa: F401
    make_lan_fixture,  # noqa: F401
    netns_sweep_fixture,  # noqa: F401
    wait_for_tcp,
)

REPO = Path(__file__).resolve().parents[2]

ECHO_SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
while True:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(1024):
            conn.sendall(data)
"""

MDNS_REGISTER = """
import socket, sys, time
from zeroconf import ServiceInfo, Zeroconf
info = ServiceInfo(
    "_booagent._tcp.local.", "node-a._booagent._tcp.local.",
    addresses=[socket.inet_aton(sys.argv[1])], port=8080, server="node-a.local.",
)
zeroconf = Zeroconf()
zeroconf.register_service(info)
time.sleep(60)
"""

MDNS_BROWSE = """
import sys, threading
from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf
found = threading.Event()
def on_change(zeroconf, service_type, name, state_change):
    if state_change is ServiceStateChange.Added:
        info = zeroconf.get_service_info(service_type, name, timeout=3000)
        if info is not None:
            print(name, *info.parsed_addresses(), info.port, flush=True)
            found.set()
zeroconf = Zeroconf()
browser = ServiceBrowser(zeroconf, "_booagent._tcp.local.", handlers=[on_change])
ok = found.wait(float(sys.argv[1]))
zeroconf.close()
sys.exit(0 if ok else 1)
"""

CRASHING_RUN = """
import sys, time
from tests.netns import Lan
lan = Lan().__enter__()
machine = lan.add_machine("a")
sleeper = machine.run(["sleep", "300"])
print(lan.tag, machine.netns, sleeper.pid, flush=True)
time.sleep(300)
"""


INTERRUPT_ON_SIGTERM = """
import os, signal, sys, time
def interrupt_test_process(*_):
    os.kill(int(sys.argv[1]), signal.SIGINT)
    sys.exit(0)
signal.signal(signal.SIGTERM, interrupt_test_process)
print("ready", flush=True)
time.sleep(300)
"""


def free_loopback_port() -> int:
    """A port nothing listens on in the root namespace's loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_http(machine: Machine, port: int) -> None:
    machine.run(
        [sys.executable, "-m", "http.server", "--bind", machine.address, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_tcp(machine.address, port)


def serve_echo(machine: Machine, port: int) -> None:
    machine.run([sys.executable, "-c", ECHO_SERVER, machine.address, str(port)])
    wait_for_tcp(machine.address, port)


def http_get_from(machine: Machine, url: str) -> str:
    fetch = "import sys, urllib.request as u; print(u.urlopen(sys.argv[1], timeout=5).status)"
    return machine.check_output([sys.executable, "-c", fetch, url]).strip()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def harness_objects(lan_tag: int) -> list[str]:
    """Namespaces, interfaces and the lock file of the LAN with ``lan_tag`` that still exist."""
    prefix = bridge_name(lan_tag)
    names = [n for n in list_netns() if n.startswith(netns_name(lan_tag, ""))]
    names += [n for n in list_links() if n.startswith(prefix)]
    return names + ([str(lock_path(lan_tag))] if lock_path(lan_tag).exists() else [])


def wait_ready(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    return proc.stdout.readline()


def crash_a_run() -> tuple[int, str, int]:
    """Run a LAN with one sleeping process in another Python process, SIGKILL that process,
    and return the tag, namespace and sleeper's pid it left behind."""
    crashed = subprocess.Popen(
        [sys.executable, "-c", CRASHING_RUN], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    tag, netns, pid = wait_ready(crashed).split()
    crashed.kill()
    crashed.wait()
    assert crashed.stdout is not None
    crashed.stdout.close()
    return int(tag), netns, int(pid)


class TestReachability:
    """Machines on one LAN reach each other and the root namespace, nothing else."""

    def test_machines_ping_each_other(self, lan: Lan) -> None:
        """Two machines answer each other's ICMP echo."""
        a, b = lan.machines(2)
        assert (a.ping(b.address), b.ping(a.address)) == (True, True)

    def test_ping_to_an_absent_address_fails(self, lan: Lan) -> None:
        """An address on the subnet that nobody holds does not answer (ping can fail)."""
        (a,) = lan.machines(1)
        assert not a.ping(str(lan.subnet.network_address + 200), timeout=0.3)

    def test_http_server_in_a_is_reachable_from_b(self, lan: Lan) -> None:
        """A server bound to A's address answers a client running in B."""
        a, b = lan.machines(2)
        port = free_loopback_port()
        serve_http(a, port)
        assert http_get_from(b, f"http://{a.address}:{port}/") == "200"

    def test_http_server_in_a_is_reachable_from_root_namespace(self, lan: Lan) -> None:
        """The test process (root namespace, on the bridge) reaches A's server."""
        (a,) = lan.machines(1)
        port = free_loopback_port()
        serve_http(a, port)
        with socket.create_connection((a.address, port), timeout=5) as conn:
            conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert conn.recv(12).startswith(b"HTTP/1.0 200")

    def test_http_server_in_a_is_not_on_root_loopback(self, lan: Lan) -> None:
        """A's server is not reachable through 127.0.0.1 of the root namespace."""
        (a,) = lan.machines(1)
        port = free_loopback_port()
        serve_http(a, port)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()

    def test_machine_reaches_host_address(self, lan: Lan) -> None:
        """A server in the root namespace on ``host_address`` accepts a machine's connection."""
        (a,) = lan.machines(1)
        with socket.create_server((lan.host_address, 0)) as server:
            port = server.getsockname()[1]
            with a.connect(lan.host_address, port):
                conn, (peer, _) = server.accept()
                conn.close()
        assert peer == a.address

    def test_parallel_lans_get_distinct_subnets(self, make_lan: Callable[..., Lan]) -> None:
        """Two LANs open at once (even asked for the same tag) get different subnets."""
        first, second = make_lan(first_tag=77), make_lan(first_tag=77)
        assert first.subnet != second.subnet

    def test_subnet_the_host_already_routes_is_skipped(self) -> None:
        """A LAN never takes a /24 the host routes through an interface of its own."""
        tag = next(t for t in range(200, 0, -1) if not harness_objects(t))
        ip("link", "add", "bafrgn0", "type", "veth", "peer", "name", "bafrgn1")
        try:
            ip("addr", "add", f"10.213.{tag}.1/24", "dev", "bafrgn0")
            ip("link", "set", "bafrgn0", "up")
            with Lan(first_tag=tag) as lan:
                assert lan.tag != tag
        finally:
            ip("link", "del", "bafrgn0")


class TestMulticast:
    """mDNS crosses the bridge."""

    def test_mdns_service_in_a_is_discovered_from_b(self, lan: Lan) -> None:
        """A zeroconf service registered in A is found by a browser in B within 5 s."""
        a, b = lan.machines(2)
        a.run([sys.executable, "-c", MDNS_REGISTER, a.address])
        found = b.check_output([sys.executable, "-c", MDNS_BROWSE, "5"], timeout=15)
        assert found.split() == ["node-a._booagent._tcp.local.", a.address, "8080"]


class TestCableCut:
    """``cut()`` makes connections hang without a reset; ``restore()`` resumes them."""

    def test_cut_stalls_connection_without_reset(self, lan: Lan) -> None:
        """After A is cut, B's read on an established connection times out (no RST)."""
        a, b = lan.machines(2)
        serve_echo(a, 7000)
        with b.connect(a.address, 7000) as conn:
            conn.sendall(b"before")
            assert conn.recv(16) == b"before"
            a.cut()
            conn.sendall(b"during")
            conn.settimeout(0.5)
            with pytest.raises(TimeoutError):
                conn.recv(16)

    def test_restore_resumes_stalled_connection(self, lan: Lan) -> None:
        """Data sent while A was cut arrives once A is restored, on the same connection."""
        a, b = lan.machines(2)
        serve_echo(a, 7000)
        with b.connect(a.address, 7000) as conn:
            a.cut()
            conn.sendall(b"during")
            time.sleep(0.3)
            a.restore()
            conn.settimeout(10)
            assert conn.recv(16) == b"during"


class TestProcesses:
    """Processes run inside their machine, pinned when asked, and are killed on request."""

    def test_process_runs_inside_the_namespace(self, lan: Lan) -> None:
        """A started process is listed among the namespace's pids."""
        (a,) = lan.machines(1)
        sleeper = a.run(["sleep", "30"])
        assert eventually(lambda: sleeper.pid in a.pids())

    def test_process_is_pinned_to_requested_core(self, lan: Lan) -> None:
        """``core=N`` leaves the process allowed on core N only."""
        (a,) = lan.machines(1)
        core = max(os.sched_getaffinity(0))
        sleeper = a.run(["sleep", "30"], core=core)
        status = Path(f"/proc/{sleeper.pid}/status")
        assert eventually(lambda: Path(f"/proc/{sleeper.pid}/comm").read_text() == "sleep\n")
        lines = status.read_text().splitlines()
        assert [ln for ln in lines if ln.startswith("Cpus_allowed_list")] == [
            f"Cpus_allowed_list:\t{core}"
        ]

    def test_machine_kill_stops_only_its_own_processes(self, lan: Lan) -> None:
        """``a.kill()`` stops A's processes and leaves B's running."""
        a, b = lan.machines(2)
        in_a, in_b = a.run(["sleep", "30"]), b.run(["sleep", "30"])
        a.kill()
        assert (is_alive(in_a.pid), is_alive(in_b.pid)) == (False, True)

    def test_machine_kill_stops_processes_that_left_the_process_group(self, lan: Lan) -> None:
        """A process that moved to a session of its own is found in the namespace and killed."""
        (a,) = lan.machines(1)
        a.run(["setsid", "-f", "sleep", "300"]).wait()
        assert eventually(lambda: len(a.pids()) == 1)
        (escaped,) = a.pids()
        a.kill()
        assert not is_alive(escaped)


class TestCleanup:
    """Leaving the context leaves nothing of the LAN behind, whatever the way out."""

    def test_exit_removes_namespaces_interfaces_and_lock(self) -> None:
        """No namespace, interface or lock file of the LAN survives its exit."""
        with Lan() as lan:
            lan.machines(3)
            tag = lan.tag
            assert len(harness_objects(tag)) == 3 + 3 + 1 + 1  # netns, veths, bridge, lock
        assert harness_objects(tag) == []

    def test_exit_kills_started_processes_and_their_children(self) -> None:
        """Processes started in machines, and the children they forked, are gone after exit."""
        with Lan() as lan:
            (a,) = lan.machines(1)
            a.run(["sh", "-c", "sleep 300 & sleep 300 & wait"])
            assert eventually(lambda: len(a.pids()) == 3)
            pids = a.pids()
        assert [pid for pid in pids if is_alive(pid)] == []

    def test_exit_kills_process_that_ignores_sigterm(self) -> None:
        """A process that ignores SIGTERM is SIGKILLed after the grace period."""
        stubborn = (
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "print('ready', flush=True); time.sleep(300)"
        )
        with Lan(grace=0.2) as lan:
            (a,) = lan.machines(1)
            proc = a.run([sys.executable, "-c", stubborn], stdout=subprocess.PIPE, text=True)
            wait_ready(proc)
        assert proc.returncode == -signal.SIGKILL

    def test_exception_in_context_still_cleans_up(self) -> None:
        """An exception raised inside the context propagates and the LAN is still removed."""
        with pytest.raises(RuntimeError, match="boom"), Lan() as lan:
            (a,) = lan.machines(1)
            sleeper = a.run(["sleep", "300"])
            tag = lan.tag
            raise RuntimeError("boom")
        assert (harness_objects(tag), is_alive(sleeper.pid)) == ([], False)

    def test_keyboard_interrupt_in_context_still_cleans_up(self) -> None:
        """A KeyboardInterrupt inside the context propagates and the LAN is still removed."""
        with pytest.raises(KeyboardInterrupt), Lan() as lan:
            (a,) = lan.machines(1)
            sleeper = a.run(["sleep", "300"])
            tag = lan.tag
            raise KeyboardInterrupt
        assert (harness_objects(tag), is_alive(sleeper.pid)) == ([], False)

    def test_ctrl_c_during_cleanup_does_not_interrupt_it(self) -> None:
        """A SIGINT that arrives while the LAN is being removed neither stops the removal nor
        raises (a process in the machine sends it when it gets its SIGTERM)."""
        try:
            with Lan() as lan:
                (a,) = lan.machines(1)
                proc = a.run(
                    [sys.executable, "-c", INTERRUPT_ON_SIGTERM, str(os.getpid())],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                wait_ready(proc)
                tag = lan.tag
        except KeyboardInterrupt:
            pytest.fail("the SIGINT interrupted the cleanup")
        assert (proc.returncode, harness_objects(tag)) == (0, [])

    def test_async_context_cleans_up(self) -> None:
        """``async with Lan()`` builds a working LAN and removes it on exit."""

        async def use_lan() -> tuple[int, bool]:
            async with Lan() as lan:
                a, b = lan.machines(2)
                return lan.tag, a.ping(b.address)

        tag, answered = asyncio.run(use_lan())
        assert (answered, harness_objects(tag)) == (True, [])


class TestSweep:
    """The sweep removes what dead runs left, and nothing else."""

    def test_sweep_removes_leftovers_of_a_killed_run(self) -> None:
        """A SIGKILLed run's namespace, bridge, processes and lock file are removed."""
        tag, netns, pid = crash_a_run()
        assert netns in list_netns()
        sweep(grace=0.5)
        assert (harness_objects(tag), is_alive(pid)) == ([], False)

    def test_new_lan_takes_over_the_tag_of_a_killed_run(self) -> None:
        """A Lan that lands on a dead run's tag removes that run's leftovers and uses it."""
        tag, netns, pid = crash_a_run()
        with Lan(first_tag=tag) as lan:
            assert (lan.tag, netns in list_netns(), is_alive(pid)) == (tag, False, False)

    def test_sweep_leaves_live_lan_alone(self, lan: Lan) -> None:
        """A LAN whose owner is alive keeps its namespace and bridge through a sweep."""
        (a,) = lan.machines(1)
        sweep()
        assert (a.netns in list_netns(), lan.bridge in list_links()) == (True, True)

    def test_sweep_leaves_lookalikes_without_lock_alone(self) -> None:
        """A bridge and a namespace named like the harness's, but never claimed, survive."""
        tag = next(t for t in range(254, 0, -1) if not harness_objects(t))
        bridge, netns = bridge_name(tag), netns_name(tag, "foreign")
        ip("link", "add", bridge, "type", "bridge")
        ip("netns", "add", netns)
        try:
            sweep()
            assert (bridge in list_links(), netns in list_netns()) == (True, True)
        finally:
            ip("link", "del", bridge)
            ip("netns", "del", netns)


class TestRequirements:
    """Where LANs cannot be built, the harness says why instead of skipping."""

    def test_unprivileged_user_gets_clear_error(self) -> None:
        """A non-root process entering a Lan gets ``NetnsUnavailable`` naming root."""
        attempt = "from tests.netns import Lan\nLan().__enter__()"
        done = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", attempt],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "NetnsUnavailable: not running as root" in done.stderr

    def test_missing_capability_gets_clear_error(self) -> None:
        """Root without CAP_NET_ADMIN gets ``NetnsUnavailable`` naming what the kernel needs."""
        attempt = "from tests.netns import Lan\nLan().__enter__()"
        done = subprocess.run(
            ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", attempt],
            cwd=REPO, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert "NetnsUnavailable" in done.stderr and "CONFIG_NET_NS" in done.stderr
