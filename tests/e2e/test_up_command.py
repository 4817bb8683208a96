"""`booagent up` as a user runs it: real nodes, the gateway, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import MEMBERS, SMOL, model_file
from tests.harness import eventually, free_port

pytestmark = pytest.mark.e2e


def _config(tmp_path: Path) -> tuple[Path, int, int]:
    gateway, node = free_port(), free_port()
    model_file(SMOL)
    config = {
        "server": {"port": gateway},
        "members": [MEMBERS[SMOL]],
        "nodes": [
            {
                "name": "smol-up",
                "member": SMOL,
                "url": f"http://127.0.0.1:{node}",
                "local": {"port": node, "threads": 1},
            }
        ],
        "routes": {"general": [SMOL]},
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, gateway, node


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _node_pids(node_port: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"llama_cpp.server" in cmdline and str(node_port).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


def test_up_serves_then_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """The gateway answers with a real node behind it; SIGTERM stops both within seconds."""
    config, gateway_port, node_port = _config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOOAGENT_")}
    command = [sys.executable, "-c", "from gateway.cli import main; main()", "up",
               "--config", str(config), "--log-dir", str(tmp_path / "logs")]  # fmt: skip
    log = tmp_path / "up.out"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{gateway_port}"
    try:
        assert eventually(lambda: _ready(base), 120), "the gateway never became ready"
        reply = httpx.post(
            f"{base}/v1/chat/completions",
            json={"model": "booagent-cluster", "messages": [{"role": "user", "content": "Hi"}],
                  "max_tokens": 4},
            timeout=60,
        )  # fmt: skip
        assert reply.status_code == 200 and reply.headers["x-booagent-node"] == "smol-up"
        nodes = _node_pids(node_port)
        assert nodes, "the node process runs"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        assert eventually(lambda: not any(_alive(pid) for pid in nodes), 10), "a node outlived up"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "booagent-cluster is ready at" in log.read_text()


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
