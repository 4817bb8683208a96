"""The system under test: the fast upstream and, in front of it, the gateway, as processes.

The gateway is started exactly as a user starts it (``booagent serve --config FILE``) with a
generated config: one ``llama_server`` node of capacity 256 (so admission never throttles the
benchmark) carrying one member, and every route pointing at it. Beside it runs
:mod:`bench.relay`, a bare TCP relay to the same upstream: the ceiling of any Python gateway.
"""

from __future__ import annotations

import sys
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
class Stack:
    """The two processes and the two ways to reach the upstream."""

    upstream: Spawned
    gateway: Spawned
    bare_relay: Spawned
    direct: Target
    through: Target
    relay: Target

    @property
    def pids(self) -> tuple[int, int, int]:
        return self.upstream.pid, self.gateway.pid, self.bare_relay.pid


def start_stack(procs: Processes) -> Stack:
    """Start the upstream, then the gateway in front of it; return once both answer."""
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
    relay_port = free_port()
    relay = procs.spawn(
        "relay",
        [sys.executable, "-m", "bench.relay", "--host", HOST, "--port", str(relay_port),
         "--upstream-port", str(upstream_port)],
        f"http://{HOST}:{relay_port}",
    )  # fmt: skip
    procs.wait_ready(relay, "/health")
    return Stack(
        upstream,
        gateway,
        relay,
        Target("direct", HOST, upstream_port),
        Target("gateway", HOST, gateway_port),
        Target("relay", HOST, relay_port),
    )


def model_for(target: Target) -> str:
    """What a client names: the virtual model through the gateway, the member directly (and
    through the relay, which does not read what it forwards)."""
    return VIRTUAL_MODEL if target.name == "gateway" else MEMBER
