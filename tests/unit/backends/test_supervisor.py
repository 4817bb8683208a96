"""The local node supervisor, with a tiny HTTP server standing in for llama_cpp.server."""

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

import httpx
import pytest
from structlog.testing import capture_logs

from backends.config import LocalProcess, Member, Node
from backends.errors import NodeProcessError
from backends.supervisor import (
    Backoff,
    CommandBuilder,
    NodeState,
    NodeSupervisor,
    SupervisorTimings,
    describe_exit,
    is_up,
    llama_cpp_commands,
    node_command,
    read_tail,
)

REPO = Path(__file__).resolve().parents[2]
FAST = SupervisorTimings(probe_interval=0.05, backoff_first=0.1, stop_grace=2.0)

STANDIN = """
import http.server, signal, subprocess, sys
port, mode = int(sys.argv[1]), sys.argv[2]
if mode == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print("grandchild", child.pid, flush=True)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(404)
        self.end_headers()
    def log_message(self, *args):
        pass
print("standin listening on", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

ORPHANED_SUPERVISOR = """
import asyncio, sys
from pathlib import Path
from backends.config import LocalProcess, Node
from backends.supervisor import NodeSupervisor
port, standin, log_dir = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
node = Node("a", "m", f"http://127.0.0.1:{port}", local=LocalProcess(port))
command = lambda n: [sys.executable, "-c", standin, str(port), "serve"]
async def main():
    supervisor = NodeSupervisor([node], command, log_dir)
    await supervisor.start()
    await supervisor.wait_ready(10)
    print(supervisor.pid("a"), file=sys.stderr, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def make_node(name: str = "a", port: int | None = None) -> Node:
    port = port or free_port()
    return Node(name, "m", f"http://127.0.0.1:{port}", local=LocalProcess(port=port))


def port_of(node: Node) -> int:
    assert node.local is not None
    return node.local.port


def standin(mode: str = "serve") -> CommandBuilder:
    return lambda node: [sys.executable, "-c", STANDIN, str(port_of(node)), mode]


def script(source: str) -> CommandBuilder:
    return lambda node: [sys.executable, "-c", source]


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may never reap orphans)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def http_status(port: int) -> int:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"http://127.0.0.1:{port}/health")
        return response.status_code


class TestNodeCommand:
    def test_builds_the_llama_cpp_server_command(self) -> None:
        """The command serves the member under its alias on loopback, interrupts off."""
        node = Node("a", "small", "http://x", local=LocalProcess(8081, 2, ("--verbose", "False")))
        member = Member("small", n_ctx=4096)
        assert node_command(node, member, Path("/m/s.gguf"), python="/py") == [
            "/py", "-m", "llama_cpp.server", "--model", "/m/s.gguf", "--model_alias", "small",
            "--host", "127.0.0.1", "--port", "8081", "--n_threads", "2", "--n_ctx", "4096",
            "--interrupt_requests", "False", "--verbose", "False",
        ]  # fmt: skip

    def test_commands_resolve_the_member_model(self) -> None:
        """llama_cpp_commands looks up the node's member and asks for its GGUF path."""
        build = llama_cpp_commands({"small": Member("small")}, lambda m: f"/m/{m.name}.gguf")
        argv = build(Node("a", "small", "http://x", local=LocalProcess(9000)))
        assert argv[0] == sys.executable
        assert argv[argv.index("--model") + 1] == "/m/small.gguf"

    def test_node_without_local_section_is_rejected(self) -> None:
        """A remote node has no command line."""
        with pytest.raises(ValueError, match="no local section"):
            node_command(Node("a", "m", "http://x"), Member("m"), "/m.gguf")


class TestBackoff:
    def test_delays_double_up_to_the_cap(self) -> None:
        """1, 2, 4 ... seconds, never more than the cap."""
        backoff = Backoff(first=1.0, cap=30.0, stable_after=60.0)
        assert [backoff.next_delay(0.5) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]

    def test_a_stable_run_resets_the_series(self) -> None:
        """A process that stayed up long enough restarts after the first delay again."""
        backoff = Backoff(first=1.0, cap=30.0, stable_after=60.0)
        backoff.next_delay(1.0)
        backoff.next_delay(1.0)
        assert backoff.next_delay(61.0) == 1.0
        assert backoff.next_delay(1.0) == 2.0


class TestHelpers:
    @pytest.mark.parametrize(
        ("code", "text"),
        [(3, "exited with code 3"), (-9, "killed by SIGKILL"), (-200, "killed by signal 200")],
    )
    def test_describe_exit(self, code: int, text: str) -> None:
        """Negative return codes name the signal."""
        assert describe_exit(code) == text

    def test_read_tail_skips_earlier_runs(self, tmp_path: Path) -> None:
        """Only lines written after the run's start offset are reported."""
        log = tmp_path / "a.log"
        log.write_bytes(b"old run\n")
        start = log.stat().st_size
        with log.open("ab") as out:
            out.write(b"one\n\ntwo\nthree\n")
        assert read_tail(log, start, 2) == ["two", "three"]
        assert read_tail(tmp_path / "missing.log", 0, 2) == []


@pytest.mark.anyio
class TestIsUp:
    @pytest.mark.parametrize(("status", "up"), [(404, True), (200, True), (503, False)])
    async def test_any_answer_but_503_is_up(self, status: int, up: bool) -> None:
        """llama_cpp.server's 404 means up; llama-server's 503 means still loading."""
        transport = httpx.MockTransport(lambda request: httpx.Response(status))
        async with httpx.AsyncClient(transport=transport) as client:
            assert await is_up(client, "a", 1234) is up

    async def test_connection_error_is_down(self) -> None:
        """Nothing listening yet is not up."""

        def refuse(request: httpx.Request) -> httpx.Response:
            raise httpx.ConnectError("refused", request=request)

        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
            assert await is_up(client, "a", 1234) is False


@pytest.mark.anyio
class TestNodeSupervisor:
    async def test_starts_nodes_and_waits_until_they_answer(self, tmp_path: Path) -> None:
        """wait_ready returns once the node answers; states go starting, running, stopped."""
        node = make_node()
        seen: list[tuple[str, NodeState]] = []
        supervisor = NodeSupervisor(
            [node, Node("remote", "m", "http://x")],
            standin(),
            tmp_path,
            timings=FAST,
            on_state=lambda name, state: seen.append((name, state)),
        )
        async with supervisor:
            await supervisor.wait_ready(10)
            assert supervisor.states() == {"a": "running"}
            assert await http_status(port_of(node)) == 404
        assert seen == [("a", "starting"), ("a", "running"), ("a", "stopped")]
        assert "standin listening" in supervisor.log_path("a").read_text()

    async def test_killed_node_is_logged_and_restarted(self, tmp_path: Path) -> None:
        """A node killed from outside is reported with its output and answers again."""
        node = make_node()
        with capture_logs() as logs:
            async with NodeSupervisor([node], standin(), tmp_path, timings=FAST) as supervisor:
                await supervisor.wait_ready(10)
                first = supervisor.pid("a")
                supervisor.kill("a")
                await eventually(lambda: supervisor.pid("a") not in (None, first))
                await supervisor.wait_ready(10)
                assert await http_status(port_of(node)) == 404
        exited = next(e for e in logs if e["event"] == "node_exited")
        assert (exited["node"], exited["pid"], exited["exit_code"]) == ("a", first, -9)
        assert exited["output"] == [f"standin listening on {port_of(node)}"]
        assert [e["delay"] for e in logs if e["event"] == "node_restarting"] == [0.1]

    async def test_process_that_exits_at_once_raises_with_its_output(self, tmp_path: Path) -> None:
        """The error names the node, the exit code and the last lines of stderr."""
        fail = "import sys; print('error: cannot open model.gguf', file=sys.stderr); sys.exit(3)"
        async with NodeSupervisor([make_node("big")], script(fail), tmp_path) as supervisor:
            with pytest.raises(NodeProcessError) as raised:
                await supervisor.wait_ready(10)
        error = raised.value
        assert (error.node, error.exit_code) == ("big", 3)
        assert error.output == ("error: cannot open model.gguf",)
        assert "node big: exited with code 3 before it was ready" in str(error)
        assert "error: cannot open model.gguf" in str(error)

    async def test_missing_executable_raises(self, tmp_path: Path) -> None:
        """A command that cannot be spawned is reported by wait_ready."""
        missing = str(tmp_path / "no-such-python")
        async with NodeSupervisor([make_node()], lambda n: [missing], tmp_path) as supervisor:
            with pytest.raises(NodeProcessError, match="node a: could not start"):
                await supervisor.wait_ready(10)

    async def test_node_that_never_answers_times_out(self, tmp_path: Path) -> None:
        """wait_ready gives up after its timeout, naming the node and showing its output."""
        slow = "import time; print('loading model', flush=True); time.sleep(30)"
        async with NodeSupervisor([make_node()], script(slow), tmp_path, timings=FAST) as sup:
            with pytest.raises(NodeProcessError, match=r"not ready after 0.5 s \(starting") as e:
                await sup.wait_ready(0.5)
            pid = sup.pid("a")
        assert e.value.output == ("loading model",)
        assert pid is not None and not alive(pid)

    async def test_aclose_kills_stubborn_process_groups(self, tmp_path: Path) -> None:
        """A node ignoring SIGTERM, and its own child, are SIGKILLed after the grace period."""
        timings = SupervisorTimings(probe_interval=0.05, stop_grace=0.3)
        supervisor = NodeSupervisor([make_node()], standin("stubborn"), tmp_path, timings=timings)
        async with supervisor:
            await supervisor.wait_ready(10)
            pid = supervisor.pid("a")
            assert pid is not None
            output = supervisor.log_path("a").read_text()
            grandchild = int(output.split("grandchild ")[1].split()[0])
            assert alive(grandchild)
        assert not alive(pid)
        await eventually(lambda: not alive(grandchild), timeout=2)
        assert supervisor.states() == {"a": "stopped"}
        assert supervisor.pid("a") is None

    async def test_restart_delays_grow(self, tmp_path: Path) -> None:
        """A node that keeps failing waits 1, 2, 4, 8 s between restarts."""
        delays: list[float] = []

        async def sleep(delay: float) -> None:
            delays.append(delay)
            await asyncio.sleep(0)

        supervisor = NodeSupervisor(
            [make_node()], script("raise SystemExit(1)"), tmp_path, clock=lambda: 0.0, sleep=sleep
        )
        async with supervisor:
            await eventually(lambda: len(delays) >= 4)
        assert delays[:4] == [1.0, 2.0, 4.0, 8.0]

    async def test_start_after_aclose_is_refused(self, tmp_path: Path) -> None:
        """A closed supervisor cannot be restarted (its probe client is gone)."""
        supervisor = NodeSupervisor([make_node()], standin(), tmp_path)
        await supervisor.aclose()
        with pytest.raises(RuntimeError, match="closed"):
            await supervisor.start()

    def test_duplicate_node_names_are_rejected(self, tmp_path: Path) -> None:
        """Two local nodes cannot share a name (nor a log file)."""
        with pytest.raises(ValueError, match="unique"):
            NodeSupervisor([make_node(), make_node()], standin(), tmp_path)


class TestParentDeath:
    def test_nodes_die_with_a_killed_supervisor(self, tmp_path: Path) -> None:
        """SIGKILLing the process that runs the supervisor takes its nodes down too."""
        argv = [sys.executable, "-c", ORPHANED_SUPERVISOR, str(free_port()), STANDIN, str(tmp_path)]
        with subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        ) as parent:
            assert parent.stderr is not None
            try:
                node_pid = int(parent.stderr.readline())
            finally:
                parent.kill()
        try:
            deadline = time.monotonic() + 5
            while alive(node_pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not alive(node_pid)
        finally:
            if alive(node_pid):
                os.kill(node_pid, signal.SIGKILL)
