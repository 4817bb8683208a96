"""A real cluster for benchmarks: ``llama_cpp.server`` nodes and, in front, the gateway process.

The user's cluster config is copied with fresh loopback ports for the gateway and for every
local node (auth off, host 127.0.0.1), so a benchmark never collides with a cluster that is
already running (``booagent up`` on 8100 and 8201-8203). The nodes run under the same
:class:`~backends.supervisor.NodeSupervisor` as ``booagent up``, in the caller's event loop;
that loop must run in the main thread, which keeps the nodes' death signal armed. The gateway
is ``booagent serve`` in its own process (so its memory can be read from ``/proc``), started
and stopped by :class:`bench.procs.Processes`.

Leaving :func:`live_cluster` stops the gateway, then every node. :func:`leftovers` finds any
process that survived, by the ports and the config path only this run used.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from backends.config import Member
from backends.models import lookup
from backends.supervisor import NodeState, NodeSupervisor, llama_cpp_commands
from bench.procs import Processes, Spawned, free_port
from gateway.settings import Settings, load_settings

HOST = "127.0.0.1"
_OVERRIDES = ("BOOAGENT_HOST", "BOOAGENT_PORT", "BOOAGENT_API_KEYS")


class BenchError(Exception):
    """A benchmark cannot run (missing model file, node or gateway that does not start)."""


def bench_config(raw: Mapping[str, Any], ports: Iterator[int]) -> dict[str, Any]:
    """A copy of a cluster config with the gateway and every local node on new ports."""
    config = copy.deepcopy(dict(raw))
    server = dict(config.get("server") or {})
    server.update(host=HOST, port=next(ports), api_keys=[])
    config["server"] = server
    nodes = []
    for node in config.get("nodes") or []:
        node = dict(node)
        if node.get("local") is not None:
            port = next(ports)
            node["local"] = {**node["local"], "port": port}
            node["url"] = f"http://{HOST}:{port}"
        nodes.append(node)
    config["nodes"] = nodes
    return config


def _free_ports() -> Iterator[int]:
    taken: set[int] = set()
    while True:
        port = free_port()
        if port not in taken:
            taken.add(port)
            yield port


def model_files(settings: Settings) -> dict[str, Path]:
    """The GGUF file of every member a local node serves; all must exist."""
    local = {n.member for n in settings.nodes if n.local is not None}
    files: dict[str, Path] = {}
    for member in settings.members:
        if member.name in local:
            if member.model is None:
                raise BenchError(f"member {member.name} has local nodes but no `model`")
            files[member.name] = settings.models_path / lookup(member.model).filename
    missing = [str(path) for path in files.values() if not path.exists()]
    if missing:
        raise BenchError(
            f"missing model files: {', '.join(missing)}; run `booagent models pull` first"
        )
    return files


@dataclass(slots=True)
class Timeline:
    """Every state change of every node, and every kill, on the monotonic clock.

    Passed to the supervisor as its ``on_state`` hook. A node is *up* from a ``running``
    event until its next event of any kind (a kill, a restart, a stop).
    """

    supervisor: NodeSupervisor | None = None
    events: list[tuple[float, str, str]] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)

    def __call__(self, node: str, state: NodeState) -> None:
        self.events.append((time.monotonic(), node, state))
        if state == "running" and self.supervisor is not None:
            pid = self.supervisor.pid(node)
            if pid is not None:
                self.pids.add(pid)

    def killed(self, node: str, at: float) -> None:
        self.events.append((at, node, "killed"))

    def up_intervals(self, node: str) -> list[tuple[float, float]]:
        """When the node was up: ``(since, until)`` pairs; ``until`` is inf while still up."""
        intervals: list[tuple[float, float]] = []
        since: float | None = None
        for at, name, state in sorted(self.events):
            if name != node:
                continue
            if state == "running":
                since = at if since is None else since
            elif since is not None:
                intervals.append((since, at))
                since = None
        if since is not None:
            intervals.append((since, float("inf")))
        return intervals

    def up_throughout(self, node: str, start: float, end: float) -> bool:
        return any(a <= start and end <= b for a, b in self.up_intervals(node))

    def up_since(self, node: str, now: float) -> float | None:
        """How long the node has been up at ``now``, or None when it is not up."""
        for a, b in self.up_intervals(node):
            if a <= now < b:
                return now - a
        return None

    def kills(self, node: str, start: float, end: float) -> int:
        return sum(
            1 for at, n, s in self.events if n == node and s == "killed" and start <= at <= end
        )

    def restarts(self) -> int:
        """``running`` events after each node's first one."""
        seen: set[str] = set()
        count = 0
        for _, node, state in sorted(self.events):
            if state == "running":
                count += node in seen
                seen.add(node)
        return count


@dataclass(slots=True)
class LiveCluster:
    """What a running benchmark cluster offers its benchmark."""

    settings: Settings
    config_path: Path
    base_url: str
    gateway: Spawned
    supervisor: NodeSupervisor
    timeline: Timeline
    ports: set[int]

    def node_url(self, name: str) -> str:
        return next(n.url for n in self.settings.nodes if n.name == name)

    def member_of(self, name: str) -> str:
        return next(n.member for n in self.settings.nodes if n.name == name)


def _gateway_argv(config: Path) -> list[str]:
    unset = [arg for name in _OVERRIDES for arg in ("-u", name)]
    main = "from gateway.cli import main; main()"
    return ["env", *unset, sys.executable, "-c", main, "serve", "--config", str(config)]


def _write_config(source: Path, workdir: Path) -> tuple[Path, Settings]:
    """Validate the user's config, write the benchmark's copy, read it back (only the models
    folder may come from the environment: the copy's ports and auth are the benchmark's)."""
    environ = {k: v for k, v in os.environ.items() if k == "BOOAGENT_MODELS_DIR"}
    load_settings(source, environ)
    raw = yaml.safe_load(source.read_text())
    path = workdir / "cluster.yaml"
    path.write_text(yaml.safe_dump(bench_config(raw, _free_ports()), sort_keys=False))
    return path, load_settings(path, environ)


@asynccontextmanager
async def live_cluster(
    config: Path, workdir: Path, *, ready_timeout: float = 300.0
) -> AsyncIterator[LiveCluster]:
    """Start the config's local nodes and the gateway; stop both (gateway first) on exit."""
    path, settings = _write_config(config, workdir)
    files = model_files(settings)
    members: dict[str, Member] = {m.name: m for m in settings.members}
    command = llama_cpp_commands(members, lambda m: files[m.name], python=sys.executable)
    timeline = Timeline()
    async with AsyncExitStack() as stack:
        supervisor = NodeSupervisor(settings.nodes, command, workdir / "nodes", on_state=timeline)
        timeline.supervisor = supervisor
        stack.push_async_callback(supervisor.aclose)
        await supervisor.start()
        await supervisor.wait_ready(ready_timeout)
        procs = stack.enter_context(Processes(workdir))
        base = f"http://{HOST}:{settings.server.port}"
        gateway = procs.spawn("gateway", _gateway_argv(path), base)
        await asyncio.to_thread(procs.wait_ready, gateway, "/ready", 60.0)
        await wait_all_ready(base, len(settings.nodes), 60.0)
        ports = {settings.server.port} | {n.local.port for n in settings.nodes if n.local}
        yield LiveCluster(settings, path, base, gateway, supervisor, timeline, ports)


async def wait_all_ready(base: str, count: int, timeout: float) -> None:
    """Until the gateway reports ``count`` nodes ready with closed breakers."""
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = (await client.get(f"{base}/v1/cluster")).json()["nodes"]
            ready = [n for n in nodes if n["state"] == "ready" and n["breaker"] == "closed"]
            if len(ready) >= count:
                return
            await asyncio.sleep(0.2)
    raise BenchError(f"the gateway at {base} did not see {count} ready nodes in {timeout:g} s")


def leftovers(ports: set[int], marker: str) -> list[int]:
    """Processes still alive that this run started: node servers on ``ports``, or any process
    whose command line names ``marker`` (the generated config path)."""
    found = []
    flags = {"--port"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        on_port = any(
            a in flags and b.isdigit() and int(b) in ports for a, b in itertools.pairwise(argv)
        )
        if marker in argv or (on_port and "llama_cpp.server" in argv):
            found.append(int(entry.name))
    return found
