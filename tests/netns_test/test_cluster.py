"""Several machines, simulated: network namespaces on one bridge (tests/netns.py), each a
"machine" running `booagent node` with a real SmolLM2-135M pinned to its own core, and the
gateway (`booagent serve`) in a machine of its own that discovers them over mDNS and reaches
them with mutual TLS. Driven from the host with the official OpenAI SDK.

One cluster serves the whole module (starting real nodes takes seconds each); the tests run
in order and each leaves the machines as it found them (links restored, extra machines
stopped). Everything is removed when the module ends, whatever happened.
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from openai import OpenAI

from gateway.certs import init, node_bundle
from tests.netns import Lan, Machine, netns_sweep_fixture, wait_for_tcp  # noqa: F401

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
MEMBER = "smollm2-135m"
KEY = "sk-netns-cluster-0123456789"
PORT = 8443


@dataclass
class World:
    lan: Lan
    gateway: Machine
    certs: Path
    tmp: Path
    nodes: dict[str, Machine]
    procs: dict[str, subprocess.Popen[Any]]

    @property
    def base(self) -> str:
        return f"http://{self.gateway.address}:8100"

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.base}/v1/cluster", headers=_auth(), timeout=10)
        response.raise_for_status()
        found: dict[str, Any] = response.json()
        return found

    def ready(self) -> set[str]:
        return {
            n["name"].split("/")[0]
            for n in self.status()["nodes"]
            if n["state"] == "ready" and n["breaker"] != "open"
        }

    def listed(self) -> set[str]:
        return {n["name"].split("/")[0] for n in self.status()["nodes"]}

    def start_node(self, name: str, machine: Machine, *, priority: int, core: int,
                   certs: Path | None = None) -> None:  # fmt: skip
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = machine.run(
                [str(BIN / "booagent"), "node", "--name", name,
                 "--serve", f"{MEMBER}={MEMBER}:2048",
                 "--certs", str(certs or self.tmp / name), "--threads", "1", "--python",
                 "--priority", str(priority), "--port", str(PORT)],
                core=core, stdout=log, stderr=subprocess.STDOUT,
                env={"HOME": os.environ.get("HOME", "/root")},
            )  # fmt: skip
        self.nodes[name] = machine

    def stop_node(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)

    def gateway_log(self) -> list[dict[str, Any]]:
        lines = (self.tmp / "gateway.log").read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


def _auth() -> dict[str, str]:
    return {"authorization": f"Bearer {KEY}"}


def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` held; a test failure naming ``what`` after ``timeout``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.25)
    return time.monotonic() - started


def _config(world_tmp: Path, gateway: Machine, certs: Path) -> Path:
    config = {
        "server": {"host": gateway.address, "port": 8100, "api_keys": [KEY]},
        "cluster": {
            "ca": str(certs / "ca.pem"), "cert": str(certs / "gateway.pem"),
            "key": str(certs / "gateway.key"), "discover": True, "forget_after": 8,
            "interfaces": [gateway.address],
        },
        "members": [{"name": MEMBER, "n_ctx": 2048, "model": MEMBER}],
        "nodes": [],
        "routes": {"general": [MEMBER], "code": [MEMBER], "chore": [MEMBER]},
        "policies": {
            "timeouts": {"connect": 2, "first_token": 20, "stall": 3, "total": 60, "queue": 30},
            "health": {"interval": 0.5, "timeout": 1},
            "breaker": {"failures": 2, "open_seconds": 2},
        },
        "strategies": {"default": "route"},
    }  # fmt: skip
    path = world_tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("machines")
    certs = tmp / "certs"
    init(certs)
    for name in ("alpha", "beta", "gamma"):
        node_bundle(certs, name, tmp / name)
    with Lan() as lan:
        gateway = lan.add_machine("gw")
        world = World(lan, gateway, certs, tmp, {}, {})
        with (tmp / "gateway.log").open("ab") as log:
            world.procs["gateway"] = gateway.run(
                [str(BIN / "booagent"), "serve", "--config", str(_config(tmp, gateway, certs))],
                core=0, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for_tcp(gateway.address, 8100, timeout=30)
        alpha, beta = lan.add_machine("alpha"), lan.add_machine("beta")
        world.start_node("alpha", alpha, priority=0, core=0)
        world.start_node("beta", beta, priority=1, core=1)
        yield world


def _client(world: World) -> OpenAI:
    return OpenAI(base_url=f"{world.base}/v1", api_key=KEY, max_retries=0, timeout=60)


def _ask(world: World, words: str = "Say hello.") -> tuple[str, str]:
    """The answer's text and the node that gave it."""
    with _client(world) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="booagent-cluster", messages=[{"role": "user", "content": words}], max_tokens=12
        )
        answer = raw.parse()
    return answer.choices[0].message.content or "", raw.headers["x-booagent-node"]


def test_announced_machines_join_and_serve_through_mutual_tls(world: World) -> None:
    """Both machines join by themselves (no node in the config) and serve; the better tier
    (alpha, priority 0) answers."""
    took = until(lambda: world.ready() == {"alpha", "beta"}, 60, "alpha and beta ready")
    print(f"joined and ready {took:.1f} s after the wait began")
    answers = [_ask(world) for _ in range(3)]
    assert all(text for text, _ in answers)
    assert {node for _, node in answers} == {f"alpha/{MEMBER}"}
    joined = [e for e in world.gateway_log() if e.get("event") == "node_joined"]
    assert {e["node"] for e in joined} == {"alpha", "beta"}


def test_clients_without_the_clusters_certificate_are_refused(world: World) -> None:
    """Plain HTTP gets a 400 naming https; TLS without a client certificate a 403."""
    alpha = world.nodes["alpha"].address
    plain = httpx.get(f"http://{alpha}:{PORT}/info", timeout=5)
    assert plain.status_code == 400 and plain.json()["error"]["code"] == "https_required"
    context = ssl.create_default_context(cafile=world.certs / "ca.pem")
    context.check_hostname = False
    bare = httpx.get(f"https://{alpha}:{PORT}/info", verify=context, timeout=5)
    assert bare.status_code == 403
    assert bare.json()["error"]["code"] == "client_certificate_required"


def test_a_machine_of_another_cluster_is_refused(world: World) -> None:
    """A node whose certificate another CA signed announces itself and is refused, with the
    reason in the gateway's log; it never serves."""
    init(world.tmp / "rogue-ca")
    node_bundle(world.tmp / "rogue-ca", "rogue", world.tmp / "rogue")
    machine = world.lan.add_machine("rogue")
    world.start_node("rogue", machine, priority=0, core=1, certs=world.tmp / "rogue")
    try:
        until(
            lambda: any(e.get("event") == "node_refused" and e.get("node") == "rogue"
                        for e in world.gateway_log()),
            60, "the rogue node refused",
        )  # fmt: skip
        (refused,) = {e["reason"] for e in world.gateway_log() if e.get("node") == "rogue"
                      and e.get("event") == "node_refused"}  # fmt: skip
        assert "refused its TLS certificate" in refused
        assert "rogue" not in world.listed()
    finally:
        world.stop_node("rogue")


def test_a_machine_cut_mid_answer_hands_the_answer_to_another(world: World) -> None:
    """alpha's cable is pulled while it streams an answer: the gateway sees the stream stall,
    and beta continues the answer; the client reads one answer to its end."""
    until(lambda: world.ready() == {"alpha", "beta"}, 60, "alpha and beta ready")
    with _client(world) as client:
        stream = client.chat.completions.create(
            model="booagent-cluster", stream=True, max_tokens=200, temperature=0,
            messages=[{"role": "user", "content": "Tell a long story about a lighthouse keeper."}],
        )  # fmt: skip
        chunks = iter(stream)
        text = [next(chunks).choices[0].delta.content or "" for _ in range(4)]
        world.nodes["alpha"].cut()
        try:
            rest = list(chunks)
        finally:
            world.nodes["alpha"].restore()
    text += [c.choices[0].delta.content or "" for c in rest if c.choices]
    continued = rest[-1].model_extra["booagent"]["continued"]
    assert [(c["from"], c["to"]) for c in continued] == [(f"alpha/{MEMBER}", f"beta/{MEMBER}")]
    assert rest[-1].choices[0].finish_reason in ("stop", "length")
    assert len("".join(text)) > 40
    until(lambda: "alpha" in world.ready(), 30, "alpha ready again")


def test_a_cut_machine_falls_back_to_the_next_tier_and_serves_again_when_back(
    world: World,
) -> None:
    """Cable pulled on alpha (no RST, nothing said): requests go to beta once the gateway
    sees alpha down; with the cable back, alpha (the better tier) serves again."""
    world.nodes["alpha"].cut()
    try:
        until(lambda: "alpha" not in world.ready(), 20, "alpha seen down")
        assert _ask(world)[1] == f"beta/{MEMBER}"
    finally:
        world.nodes["alpha"].restore()
    took = until(lambda: "alpha" in world.ready(), 30, "alpha ready again")
    print(f"alpha serving again {took:.1f} s after its link came back")
    assert _ask(world)[1] == f"alpha/{MEMBER}"


def test_a_machine_gone_longer_than_forget_after_leaves_and_rejoins(world: World) -> None:
    beta = world.nodes["beta"]
    beta.cut()
    try:
        took = until(lambda: "beta" not in world.listed(), 40, "beta forgotten")
        print(f"beta left the pool {took:.1f} s after its link was cut (forget_after 8 s)")
    finally:
        beta.restore()
    took = until(lambda: "beta" in world.ready(), 60, "beta back in the pool")
    print(f"beta rejoined {took:.1f} s after its link came back")


def test_a_new_machine_joins_and_takes_load(world: World) -> None:
    """gamma, a third machine in alpha's tier, joins within seconds and answers some of the
    requests sent while both are busy."""
    machine = world.lan.add_machine("gamma")
    world.start_node("gamma", machine, priority=0, core=1)
    try:
        took = until(lambda: "gamma" in world.ready(), 60, "gamma ready")
        print(f"gamma joined and ready {took:.1f} s after it started")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:
            nodes = [node for _, node in pool.map(lambda _: _ask(world), range(6))]
        assert f"gamma/{MEMBER}" in nodes and f"alpha/{MEMBER}" in nodes
    finally:
        world.stop_node("gamma")
    until(lambda: "gamma" not in world.listed(), 20, "gamma gone after its goodbye")
