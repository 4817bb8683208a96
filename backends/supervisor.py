"""Start and watch the local ``llama_cpp.server`` node processes of ``booagent up``.

:func:`node_command` builds one node's command line (pure). :class:`NodeSupervisor` runs one
process per node that has a ``local`` section, each in its own session so that a signal to the
process group reaches everything the node started. A node's output is appended to
``<log_dir>/<node>.log``; the last lines of the current run go into the ``node_exited`` event
and into :class:`~backends.errors.NodeProcessError`, so the user sees why a node died.

A watch task per node waits until the node answers HTTP, then for its exit; an unexpected exit
is logged and the node restarted after a :class:`Backoff` delay. The per-node
:data:`NodeState` is informational: the gateway's health tracker probes nodes itself.

Children also die with the supervisor when it is killed outright: each sets
``PR_SET_PDEATHSIG`` to SIGTERM before ``exec`` (Linux only). Linux sends that signal when the
*thread* that forked the child ends, so the event loop's thread must live as long as the nodes
do, which it does when ``booagent up`` runs the loop in the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
import time
from asyncio.subprocess import Process
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import structlog

from backends.config import LocalProcess, Member, Node
from backends.errors import NodeError, NodeProcessError
from backends.http_errors import map_errors

NodeState = Literal["starting", "running", "restarting", "stopped"]
CommandBuilder = Callable[[Node], Sequence[str]]
ModelPath = Callable[[Member], str | os.PathLike[str]]
StateHook = Callable[[str, NodeState], None]
Sleep = Callable[[float], Awaitable[None]]

_PR_SET_PDEATHSIG = 1
_TAIL_BYTES = 16384


def _local(node: Node) -> LocalProcess:
    if node.local is None:
        raise ValueError(f"node {node.name} has no local section")
    return node.local


def node_command(
    node: Node, member: Member, model_path: str | os.PathLike[str], *, python: str = sys.executable
) -> list[str]:
    """The command line that serves ``member`` from the GGUF at ``model_path`` as ``node``."""
    local = _local(node)
    return [
        python, "-m", "llama_cpp.server",
        "--model", os.fspath(model_path),
        "--model_alias", member.name,
        "--host", "127.0.0.1",
        "--port", str(local.port),
        "--n_threads", str(local.threads),
        "--n_ctx", str(member.n_ctx),
        "--interrupt_requests", "False",
        *local.extra_args,
    ]  # fmt: skip


def llama_cpp_commands(
    members: Mapping[str, Member], model_path: ModelPath, *, python: str = sys.executable
) -> CommandBuilder:
    """A :data:`CommandBuilder` for real nodes; ``model_path`` resolves a member's GGUF file."""

    def build(node: Node) -> list[str]:
        member = members[node.member]
        return node_command(node, member, model_path(member), python=python)

    return build


@dataclass(frozen=True, slots=True)
class SupervisorTimings:
    """Seconds, except ``tail_lines`` (how many output lines an exit report carries)."""

    stop_grace: float = 5.0
    probe_interval: float = 0.25
    probe_timeout: float = 2.0
    backoff_first: float = 1.0
    backoff_cap: float = 30.0
    stable_after: float = 60.0
    tail_lines: int = 20


class Backoff:
    """Restart delays ``first``, twice that, four times ... capped at ``cap``.

    A process that stayed up for ``stable_after`` seconds starts the series over.
    """

    def __init__(self, first: float, cap: float, stable_after: float) -> None:
        self._first = first
        self._cap = cap
        self._stable_after = stable_after
        self._next = first

    def next_delay(self, uptime: float) -> float:
        if uptime >= self._stable_after:
            self._next = self._first
        delay = self._next
        self._next = min(self._cap, delay * 2)
        return delay


async def is_up(client: httpx.AsyncClient, node: str, port: int) -> bool:
    """True once the node on ``port`` answers ``GET /health`` with anything but a 503.

    llama_cpp.server has no such route and answers 404 at once, without taking its model
    lock; native llama-server answers 503 while it loads the model.
    """
    try:
        with map_errors(node):
            response = await client.get(f"http://127.0.0.1:{port}/health")
    except NodeError:
        return False
    return response.status_code != 503


def describe_exit(code: int) -> str:
    """``exited with code 3`` or ``killed by SIGKILL``."""
    if code >= 0:
        return f"exited with code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


def read_tail(path: Path, start: int, lines: int) -> list[str]:
    """The last ``lines`` lines written to ``path`` after byte offset ``start``."""
    try:
        with path.open("rb") as log:
            size = log.seek(0, os.SEEK_END)
            log.seek(max(start, size - _TAIL_BYTES))
            text = log.read().decode("utf-8", "replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _terminate(proc: Process, grace: float) -> int:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds; the leader's exit code."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(grace):
            await proc.wait()
    _signal_group(proc.pid, signal.SIGKILL)
    return await proc.wait()


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return set_death_signal


@dataclass(frozen=True, slots=True)
class _Context:
    """What every node runner shares with its supervisor."""

    timings: SupervisorTimings
    client: httpx.AsyncClient
    log: Any
    changed: StateHook
    clock: Callable[[], float]
    sleep: Sleep
    preexec: Callable[[], None] | None


class _NodeProcess:
    """One node's process and the task that keeps it running."""

    def __init__(self, node: Node, argv: Sequence[str], log_path: Path, ctx: _Context) -> None:
        self.name = node.name
        self.port = _local(node).port
        self.argv = tuple(argv)
        self.log_path = log_path
        self.state: NodeState = "stopped"
        self.start_error: NodeProcessError | None = None
        self.proc: Process | None = None
        self._ctx = ctx
        self._log_start = 0
        self._task: asyncio.Task[None] | None = None
        t = ctx.timings
        self._backoff = Backoff(t.backoff_first, t.backoff_cap, t.stable_after)

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name=f"supervise-{self.name}")
        self._task.add_done_callback(self._watch_done)

    def tail(self) -> list[str]:
        return read_tail(self.log_path, self._log_start, self._ctx.timings.tail_lines)

    def _set_state(self, state: NodeState) -> None:
        self.state = state
        self._ctx.changed(self.name, state)

    async def _watch(self) -> None:
        while True:
            started = self._ctx.clock()
            await self._run_once()
            self._set_state("restarting")
            delay = self._backoff.next_delay(self._ctx.clock() - started)
            self._ctx.log.info("node_restarting", node=self.name, delay=delay)
            await self._ctx.sleep(delay)

    async def _run_once(self) -> None:
        self._set_state("starting")
        try:
            proc = await self._spawn()
        except OSError as exc:
            self._ctx.log.error("node_spawn_failed", node=self.name, error=str(exc))
            self.start_error = NodeProcessError(self.name, f"could not start: {exc}")
            return
        if await self._until_ready(proc):
            self.start_error = None
            self._set_state("running")
        self._exited(proc, await proc.wait())

    async def _spawn(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            out.write(f"--- booagent: starting {shlex.join(self.argv)}\n".encode())
            out.flush()
            self._log_start = out.tell()
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._ctx.preexec,
            )
        log = str(self.log_path)
        self._ctx.log.info("node_started", node=self.name, pid=self.proc.pid, log=log)
        return self.proc

    async def _until_ready(self, proc: Process) -> bool:
        started = self._ctx.clock()
        while proc.returncode is None:
            if await is_up(self._ctx.client, self.name, self.port):
                seconds = round(self._ctx.clock() - started, 3)
                self._ctx.log.info("node_ready", node=self.name, pid=proc.pid, seconds=seconds)
                return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), self._ctx.timings.probe_interval)
        return False

    def _exited(self, proc: Process, code: int) -> None:
        _signal_group(proc.pid, signal.SIGKILL)
        output = self.tail()
        how = describe_exit(code)
        self._ctx.log.warning(
            "node_exited", node=self.name, pid=proc.pid, exit_code=code, reason=how, output=output
        )
        if self.state != "running":
            message = f"{how} before it was ready (log: {self.log_path})"
            self.start_error = NodeProcessError(self.name, message, exit_code=code, output=output)
        self.proc = None

    def _watch_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._ctx.log.error("node_watch_failed", node=self.name, exc_info=exc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            _signal_group(self.proc.pid, signal.SIGKILL)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task})
        proc, self.proc = self.proc, None
        if proc is not None:
            code = await _terminate(proc, self._ctx.timings.stop_grace)
            self._ctx.log.info("node_stopped", node=self.name, pid=proc.pid, exit_code=code)
        self._set_state("stopped")


class NodeSupervisor:
    """Runs the local nodes among ``nodes``; an async context manager (start ... aclose).

    ``command`` builds each node's command line (:func:`llama_cpp_commands` for real nodes).
    ``on_state(node, state)`` is called on every state change and must not raise. ``clock``
    and ``sleep`` time the restart backoff.
    """

    def __init__(
        self,
        nodes: Iterable[Node],
        command: CommandBuilder,
        log_dir: Path,
        *,
        timings: SupervisorTimings | None = None,
        on_state: StateHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        timings = timings or SupervisorTimings()
        self._hook = on_state
        self._changed = asyncio.Event()
        self._client = httpx.AsyncClient(timeout=timings.probe_timeout, trust_env=False)
        log = structlog.get_logger("booagent.supervisor")
        ctx = _Context(timings, self._client, log, self._on_change, clock, sleep, die_with_parent())
        local = [node for node in nodes if node.local is not None]
        self._nodes = {
            node.name: _NodeProcess(node, command(node), log_dir / f"{node.name}.log", ctx)
            for node in local
        }
        if len(self._nodes) != len(local):
            raise ValueError("local node names must be unique")
        self._closed = False

    def _on_change(self, node: str, state: NodeState) -> None:
        self._changed.set()
        if self._hook is not None:
            self._hook(node, state)

    def states(self) -> dict[str, NodeState]:
        return {name: node.state for name, node in self._nodes.items()}

    def pid(self, name: str) -> int | None:
        """The node's current process id, or None while no process of it is alive."""
        proc = self._nodes[name].proc
        return proc.pid if proc is not None and proc.returncode is None else None

    def log_path(self, name: str) -> Path:
        return self._nodes[name].log_path

    def kill(self, name: str) -> None:
        """SIGKILL the node's process group (chaos tests); the watcher restarts it."""
        self._nodes[name].kill()

    async def start(self) -> None:
        """Spawn every node that is stopped; returns at once (see :meth:`wait_ready`)."""
        if self._closed:
            raise RuntimeError("the supervisor is closed")
        for node in self._nodes.values():
            if node.state == "stopped":
                node.start()

    async def wait_ready(self, timeout: float) -> None:
        """Return once every node answers HTTP.

        Raises :class:`NodeProcessError` as soon as a node exits (or cannot be spawned) before
        it is ready, or for the first node still unready after ``timeout`` seconds.
        """
        try:
            async with asyncio.timeout(timeout):
                await self._until_all_ready()
        except TimeoutError:
            raise self._not_ready(timeout) from None

    async def _until_all_ready(self) -> None:
        while True:
            self._changed.clear()
            for node in self._nodes.values():
                if node.start_error is not None:
                    raise node.start_error
            if all(node.state == "running" for node in self._nodes.values()):
                return
            await self._changed.wait()

    def _not_ready(self, timeout: float) -> NodeProcessError:
        node = next(n for n in self._nodes.values() if n.state != "running")
        message = f"not ready after {timeout:g} s ({node.state}; log: {node.log_path})"
        return NodeProcessError(node.name, message, output=node.tail())

    async def aclose(self) -> None:
        """Stop every node: SIGTERM its group, SIGKILL after the grace period; idempotent."""
        self._closed = True
        try:
            await asyncio.gather(*(node.stop() for node in self._nodes.values()))
        finally:
            await self._client.aclose()

    async def __aenter__(self) -> NodeSupervisor:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
