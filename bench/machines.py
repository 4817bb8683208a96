"""`booagent bench machines`: does a cluster of two machines give the sum of its parts?

Two machines simulated with network namespaces (:mod:`bench.netns`), each running
``booagent node`` with a real SmolLM2-135M on one thread pinned to its own core, and the
gateway (``booagent serve``) in a third namespace that discovers them over mDNS and reaches
them with mutual TLS. The same closed-loop load (``concurrency`` clients, each asking for
``max_tokens`` tokens of a short answer, ``duration`` seconds) runs three times: with only
machine 1 in the cluster, with only machine 2, with both. Throughput is completion tokens per
second as the responses' ``usage`` counts them (and requests per second). The figure that
matters: both together against the sum of each alone (target: at least 90%).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.netns import Lan, Machine, wait_for_tcp

MEMBER = "smollm2-135m"
KEY = "sk-bench-machines-0123456789"
BIN = Path(sys.executable).parent
PROMPT = "Write one short paragraph about rivers."


@dataclass(frozen=True, slots=True)
class MachinesSettings:
    duration: float = 60.0
    concurrency: int = 4
    max_tokens: int = 64


@dataclass(slots=True)
class Phase:
    name: str
    seconds: float = 0.0
    requests: int = 0
    tokens: int = 0
    failed: int = 0
    nodes: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass(slots=True)
class MachinesReport:
    settings: MachinesSettings
    phases: list[Phase] = field(default_factory=list)

    def ratio(self) -> float:
        one, two, both = self.phases
        alone = one.tokens_per_second + two.tokens_per_second
        return both.tokens_per_second / alone if alone else 0.0


def _load(base: str, settings: MachinesSettings, name: str) -> Phase:
    """Closed-loop clients for ``duration`` seconds against the gateway."""
    phase = Phase(name)
    lock = threading.Lock()
    stop = time.monotonic() + settings.duration
    body = {"model": "booagent-cluster", "max_tokens": settings.max_tokens,
            "messages": [{"role": "user", "content": PROMPT}]}  # fmt: skip

    def client() -> None:
        with httpx.Client(base_url=base, headers={"authorization": f"Bearer {KEY}"},
                          timeout=120, trust_env=False) as http:  # fmt: skip
            while time.monotonic() < stop:
                response = http.post("/v1/chat/completions", json=body)
                with lock:
                    _count(phase, response)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(settings.concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.seconds = time.monotonic() - started
    return phase


def _count(phase: Phase, response: httpx.Response) -> None:
    if response.status_code != 200:
        phase.failed += 1
        return
    answer = response.json()
    phase.requests += 1
    phase.tokens += int(answer["usage"]["completion_tokens"])
    node = response.headers.get("x-booagent-node", "?")
    phase.nodes[node] = phase.nodes.get(node, 0) + 1


@dataclass
class _Cluster:
    lan: Lan
    tmp: Path
    gateway: Machine
    procs: dict[str, subprocess.Popen[Any]] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://{self.gateway.address}:8100"

    def ready(self) -> set[str]:
        response = httpx.get(f"{self.base}/v1/cluster", headers={"authorization": f"Bearer {KEY}"},
                             timeout=10, trust_env=False)  # fmt: skip
        return {n["name"].split("/")[0] for n in response.json()["nodes"]
                if n["state"] == "ready" and n["breaker"] != "open"}  # fmt: skip

    def start(self, name: str, machine: Machine, core: int) -> None:
        with (self.tmp / f"{name}.log").open("ab") as log:
            self.procs[name] = machine.run(
                [str(BIN / "booagent"), "node", "--name", name, "--serve",
                 f"{MEMBER}={MEMBER}:2048", "--certs", str(self.tmp / name), "--threads", "1",
                 "--python"],
                core=core, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def stop(self, name: str) -> None:
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s: {what}")
        time.sleep(0.5)


def _gateway_config(tmp: Path, gateway: Machine) -> Path:
    certs = tmp / "certs"
    config = {
        "server": {"host": gateway.address, "port": 8100, "api_keys": [KEY]},
        "cluster": {"ca": str(certs / "ca.pem"), "cert": str(certs / "gateway.pem"),
                    "key": str(certs / "gateway.key"), "discover": True, "forget_after": 5,
                    "interfaces": [gateway.address]},
        "members": [{"name": MEMBER, "n_ctx": 2048}],
        "nodes": [],
        "routes": {"general": [MEMBER], "code": [MEMBER], "chore": [MEMBER]},
        "policies": {"health": {"interval": 0.5, "timeout": 1}},
        "strategies": {"default": "route"},
    }  # fmt: skip
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_machines(settings: MachinesSettings, echo: Callable[[str], None]) -> MachinesReport:
    from gateway.certs import init, node_bundle  # a benchmark may import down to the gateway

    report = MachinesReport(settings)
    with tempfile.TemporaryDirectory(prefix="booagent-bench-machines-") as name, Lan() as lan:
        tmp = Path(name)
        init(tmp / "certs")
        for node in ("m1", "m2"):
            node_bundle(tmp / "certs", node, tmp / node)
        gateway = lan.add_machine("gw")
        cluster = _Cluster(lan, tmp, gateway)
        with (tmp / "gateway.log").open("ab") as log:
            gateway.run([str(BIN / "booagent"), "serve", "--config",
                         str(_gateway_config(tmp, gateway))], stdout=log,
                        stderr=subprocess.STDOUT)  # fmt: skip
        wait_for_tcp(gateway.address, 8100, timeout=30)
        one, two = lan.add_machine("m1"), lan.add_machine("m2")
        for label, wanted in (("machine 1 alone", {"m1"}), ("machine 2 alone", {"m2"}),
                              ("both machines", {"m1", "m2"})):  # fmt: skip
            for node, machine, core in (("m1", one, 0), ("m2", two, 1)):
                if node in wanted and node not in cluster.procs:
                    cluster.start(node, machine, core)
                if node not in wanted and node in cluster.procs:
                    cluster.stop(node)
            _until(lambda w=wanted: cluster.ready() == w, 90, f"{sorted(wanted)} serving")  # type: ignore[misc]
            echo(f"{label}: load for {settings.duration:g} s")
            report.phases.append(_load(cluster.base, settings, label))
    return report


def _load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def machines_markdown(report: MachinesReport) -> str:
    s = report.settings
    rows = [
        f"| {p.name} | {p.tokens_per_second:.1f} | {p.requests_per_second:.2f} | {p.failed} | "
        f"{', '.join(f'{n}: {c}' for n, c in sorted(p.nodes.items()))} |"
        for p in report.phases
    ]
    return "\n".join(
        [
            "## Two machines against the sum of each alone",
            "",
            f"`booagent bench machines --duration {s.duration:g} --concurrency {s.concurrency} "
            f"--max-tokens {s.max_tokens}`: two network-namespace machines, each a `booagent "
            "node` with SmolLM2-135M on one thread pinned to its own core, the gateway in a "
            f"third namespace (discovery, mutual TLS); load {_load_average()} at the end.",
            "",
            "| cluster | tokens/s | requests/s | failed | answered by |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Both together: **{report.ratio():.0%}** of the sum of each alone (target 90%).",
            "",
        ]
    )
