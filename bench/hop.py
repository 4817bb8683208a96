"""`booagent bench hop`: what a node agent's mutual-TLS hop adds to each request and chunk.

A fast fake upstream (:mod:`bench.upstream`, microseconds per answer) stands in for the
llama.cpp server; a real node agent (:mod:`backends.agent` behind its mutual-TLS listener, in
its own process, with certificates from `booagent certs`) relays to it. One client, the
gateway's own node client (aiohttp), asks the same streamed answers directly (plain HTTP on
loopback, as the gateway reaches a local node) and through the agent (HTTPS with client
certificates, as it reaches another machine), alternating in rounds so that drift hits both:

- per request: a 4-token stream, ``requests`` times each way, one at a time;
- per chunk: a ``chunks``-token stream, the difference divided by the tokens.

Connections are kept alive, as the gateway keeps them; the first request of each way (TLS
handshake included) is left out, and the handshake is measured on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from backends.mtls import TlsFiles, gateway_context, node_context
from bench.netns_machine import wait_for_tcp
from bench.procs import free_port
from bench.stats import percentile

BODY = b'{"model":"tiny","messages":[{"role":"user","content":"hi"}],"stream":true,"max_tokens":%d}'


@dataclass(frozen=True, slots=True)
class HopSettings:
    requests: int = 1000
    chunks: int = 1000
    rounds: int = 5


@dataclass(slots=True)
class HopReport:
    settings: HopSettings
    direct: list[float] = field(default_factory=list)
    hop: list[float] = field(default_factory=list)
    long_direct: list[float] = field(default_factory=list)
    long_hop: list[float] = field(default_factory=list)
    handshake: list[float] = field(default_factory=list)

    def added_ms(self, q: float) -> float:
        return (percentile(self.hop, q) - percentile(self.direct, q)) * 1000

    def per_chunk_us(self) -> float:
        added = statistics.median(self.long_hop) - statistics.median(self.long_direct)
        return added / self.settings.chunks * 1e6


@contextlib.contextmanager
def _process(argv: list[str], port: int) -> Iterator[None]:
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_tcp("127.0.0.1", port, timeout=20)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


async def _ask(session: aiohttp.ClientSession, url: str, tokens: int, **tls: object) -> float:
    started = time.perf_counter()
    async with session.post(url, data=BODY % tokens, **tls) as response:  # type: ignore[arg-type]
        async for _ in response.content.iter_any():
            pass
    return time.perf_counter() - started


async def _measure(settings: HopSettings, direct: str, hop: str, tls: TlsFiles) -> HopReport:
    report = HopReport(settings)
    secure = {"ssl": tls.context, "server_hostname": "bench-node"}
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for url, extra in ((direct, {}), (hop, secure)):
            await _ask(session, url, 4, **extra)  # connect (and handshake) once, off the clock
        per_round = max(1, settings.requests // settings.rounds)
        for _ in range(settings.rounds):
            report.direct += [await _ask(session, direct, 4) for _ in range(per_round)]
            report.hop += [await _ask(session, hop, 4, **secure) for _ in range(per_round)]
            report.long_direct.append(await _ask(session, direct, settings.chunks))
            report.long_hop.append(await _ask(session, hop, settings.chunks, **secure))
    for _ in range(20):
        async with aiohttp.ClientSession() as fresh:
            report.handshake.append(await _ask(fresh, hop, 4, **secure))
    return report


def run_hop(settings: HopSettings) -> HopReport:
    with tempfile.TemporaryDirectory(prefix="booagent-bench-hop-") as tmp:
        certs = Path(tmp)
        _certificates(certs)
        upstream, agent = free_port(), free_port()
        python = sys.executable
        with (
            _process([python, "-m", "bench.upstream", "--port", str(upstream)], upstream),
            _process(
                [
                    python,
                    "-m",
                    "bench.hop",
                    "--agent",
                    str(agent),
                    "--upstream",
                    str(upstream),
                    "--certs",
                    str(certs),
                ],
                agent,
            ),  # fmt: skip
        ):
            tls = TlsFiles(certs / "gateway.pem", certs / "gateway.key", certs / "ca.pem",
                           gateway_context)  # fmt: skip
            return asyncio.run(
                _measure(
                    settings,
                    f"http://127.0.0.1:{upstream}/v1/chat/completions",
                    f"https://127.0.0.1:{agent}/m/tiny/v1/chat/completions",
                    tls,
                )
            )


def _certificates(directory: Path) -> None:
    from gateway.certs import init, node_bundle  # bench may import down to the gateway

    init(directory)
    node_bundle(directory, "bench-node", directory)


async def _serve_agent(port: int, upstream: int, certs: Path) -> None:
    """The agent process: relays to the upstream on loopback, until terminated."""
    from aiohttp import web

    from backends.agent import AgentInfo, Served, agent_app, refusal
    from backends.tls_listen import HttpsListener, listening_sockets

    served = {"tiny": Served("tiny", "llama_server", f"http://127.0.0.1:{upstream}", 256, 4096)}
    tls = TlsFiles(certs / "bench-node.pem", certs / "bench-node.key", certs / "ca.pem",
                   node_context)  # fmt: skip
    async with _session() as session:
        runner = web.AppRunner(
            agent_app(AgentInfo("bench-node", served, lambda _: True), session),
            handler_cancellation=True, access_log=None,
        )  # fmt: skip
        await runner.setup()
        assert runner.server is not None
        listeners = [
            HttpsListener(sock, runner.server, tls, refusal)
            for sock in listening_sockets("127.0.0.1", port, 128)
        ]
        try:
            await asyncio.Event().wait()
        finally:
            for listener in listeners:
                listener.close()
            await runner.cleanup()


@contextlib.asynccontextmanager
async def _session() -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
    async with aiohttp.ClientSession(connector=connector, trust_env=False) as session:
        yield session


def hop_markdown(report: HopReport) -> str:
    s = report.settings
    return "\n".join(
        [
            "## The node agent's mutual-TLS hop",
            "",
            f"`booagent bench hop --requests {s.requests} --chunks {s.chunks}` on "
            f"{os.cpu_count()} cores (load {', '.join(f'{v:.2f}' for v in os.getloadavg())} "
            "at the end): a fast fake upstream asked directly (plain HTTP on loopback) and "
            "through a node agent (HTTPS with client certificates), one request at a time, "
            "kept-alive connections.",
            "",
            "| | direct | through the agent | added |",
            "|---|---|---|---|",
            f"| 4-token stream, p50 | {percentile(report.direct, 50) * 1000:.2f} ms | "
            f"{percentile(report.hop, 50) * 1000:.2f} ms | **{report.added_ms(50):+.2f} ms** |",
            f"| 4-token stream, p99 | {percentile(report.direct, 99) * 1000:.2f} ms | "
            f"{percentile(report.hop, 99) * 1000:.2f} ms | {report.added_ms(99):+.2f} ms |",
            f"| {s.chunks}-token stream, median | "
            f"{statistics.median(report.long_direct) * 1000:.1f} ms | "
            f"{statistics.median(report.long_hop) * 1000:.1f} ms | "
            f"**{report.per_chunk_us():+.1f} us per chunk** |",
            f"| new connection (TLS handshake + request), median | | "
            f"{statistics.median(report.handshake) * 1000:.2f} ms | |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the agent side of `booagent bench hop`")
    parser.add_argument("--agent", type=int, required=True)
    parser.add_argument("--upstream", type=int, required=True)
    parser.add_argument("--certs", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_agent(args.agent, args.upstream, args.certs))


if __name__ == "__main__":
    main()
