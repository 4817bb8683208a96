"""The system under test: the fast upstream and, in front of it, the gateway, as processes.

The gateway is started exactly as a user starts it (``booagent serve --config FILE``) with a
generated config: one ``llama_server`` node of capacity 256 (so admission never throttles the
benchmark) carrying one member, and every route pointing at it. Beside it run the *bounds*,
servers that do less per request than any gateway could and so cap what it can serve:
:mod:`bench.relay`, a bare TCP relay to the same upstream (the ceiling of any Python gateway),
and :mod:`bench.floor` as a bare ASGI app and as a Litestar app on the gateway's own server
(the ceilings of any gateway served by uvicorn, and of any built on Litestar).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from bench.load import Target
from bench.procs import Processes, Spawned, free_port

VIRTUAL_MODEL = "booagent-cluster"
MEMBER = "bench"
HOST = "127.0.0.1"


def gateway_config(port: int, upstream_port: int) -> dict[str, Any]:
    """The gateway's config: one fast node that admission never throttles."""
    return {
        "server": {"host": HOST, "port": port, "virtual_model": VIRTUAL_MODEL},
        "members": [{"name": MEMBER, "role": "benchmark upstream", "n_ctx": 4096}],
        "nodes": [
            {
                "name": "bench-1",
                "member": MEMBER,
                "url": f"http://{HOST}:{upstream_port}",
                "kind": "llama_server",
                "capacity": 256,
            }
        ],
        "routes": {"code": [MEMBER], "general": [MEMBER], "chore": [MEMBER]},
    }


@dataclass(frozen=True, slots=True)
class Bound:
    """A server measured beside the gateway that does less than it per request."""

    name: str
    spawned: Spawned
    target: Target


BOUNDS: dict[str, Callable[[int], list[str]]] = {
    "relay": lambda upstream_port: ["-m", "bench.relay", "--upstream-port", str(upstream_port)],
    "asgi": lambda _: ["-m", "bench.floor", "--app", "asgi"],
    "litestar": lambda _: ["-m", "bench.floor", "--app", "litestar"],
}
"""Each bound's module and arguments, given the upstream's port (only the relay talks to it)."""


@dataclass(frozen=True, slots=True)
class Stack:
    """The processes and the ways to reach the upstream: directly, through the gateway, and
    each bound's own answer."""

    upstream: Spawned
    gateway: Spawned
    direct: Target
    through: Target
    bounds: tuple[Bound, ...]

    @property
    def pids(self) -> tuple[int, ...]:
        return (self.upstream.pid, self.gateway.pid, *(b.spawned.pid for b in self.bounds))

    @property
    def targets(self) -> tuple[Target, ...]:
        return (self.direct, self.through, *(b.target for b in self.bounds))


def start_stack(procs: Processes, bounds: Sequence[str] = ()) -> Stack:
    """Start the upstream, the gateway in front of it, and the named ``bounds`` (keys of
    :data:`BOUNDS`); return once all answer."""
    upstream_port = free_port()
    upstream = procs.spawn(
        "upstream",
        [sys.executable, "-m", "bench.upstream", "--host", HOST, "--port", str(upstream_port)],
        f"http://{HOST}:{upstream_port}",
    )
    procs.wait_ready(upstream, "/health")
    gateway_port = free_port()
    config = procs.workdir / "gateway.yaml"
    config.write_text(yaml.safe_dump(gateway_config(gateway_port, upstream_port)))
    gateway = procs.spawn(
        "gateway",
        [
            sys.executable,
            "-c",
            "from gateway.cli import main; main()",
            "serve",
            "--config",
            str(config),
        ],
        f"http://{HOST}:{gateway_port}",
    )
    procs.wait_ready(gateway, "/ready")
    return Stack(
        upstream,
        gateway,
        Target("direct", HOST, upstream_port),
        Target("gateway", HOST, gateway_port),
        tuple(_start_bound(procs, name, upstream_port) for name in bounds),
    )


def _start_bound(procs: Processes, name: str, upstream_port: int) -> Bound:
    port = free_port()
    argv = [sys.executable, *BOUNDS[name](upstream_port), "--host", HOST, "--port", str(port)]
    spawned = procs.spawn(name, argv, f"http://{HOST}:{port}")
    procs.wait_ready(spawned, "/health")
    return Bound(name, spawned, Target(name, HOST, port))


def model_for(target: Target) -> str:
    """What a client names: the virtual model through the gateway, the member elsewhere (the
    relay does not read what it forwards, and the floors answer any model)."""
    return VIRTUAL_MODEL if target.name == "gateway" else MEMBER
