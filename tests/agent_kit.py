"""A node agent (backends.agent) behind its real mutual-TLS listener, over a small local
server on loopback that streams slowly and records what it saw; certificates made by the
project's `booagent certs` code. Shared by the agent and discovery tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

from backends.agent import AgentInfo, Served, agent_app, refusal
from backends.mtls import TlsFiles, gateway_context, node_context
from backends.tls_listen import HttpsListener, listening_sockets
from gateway.certs import init, node_bundle

MEMBER = "tiny"


@dataclass
class Local:
    """The member's local server: streams ``words`` one every ``delay`` seconds."""

    words: int = 5
    delay: float = 0.0
    bodies: list[dict[str, object]] = field(default_factory=list)
    cancelled: int = 0

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        try:
            for i in range(self.words):
                await asyncio.sleep(self.delay)
                delta = {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]}
                await response.write(f"data: {json.dumps(delta)}\n\n".encode())
            end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            await response.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return response


@dataclass
class Cluster:
    certs: Path
    node: Path

    def gateway_tls(self, certs: Path | None = None) -> TlsFiles:
        where = certs or self.certs
        return TlsFiles(
            where / "gateway.pem", where / "gateway.key", where / "ca.pem", gateway_context
        )

    def node_tls(self, name: str = "laptop") -> TlsFiles:
        return TlsFiles(
            self.node / f"{name}.pem", self.node / f"{name}.key", self.node / "ca.pem",
            node_context,
        )  # fmt: skip


def make_cluster(tmp_path: Path) -> Cluster:
    """A cluster CA with the gateway's certificate, and node ``laptop``'s bundle."""
    init(tmp_path / "certs")
    node_bundle(tmp_path / "certs", "laptop", tmp_path / "node")
    return Cluster(tmp_path / "certs", tmp_path / "node")


@dataclass
class Running:
    port: int
    local: Local
    tls: TlsFiles


async def running_agent(local: Local, tls: TlsFiles, ready: bool = True) -> AsyncIterator[Running]:
    local_app = web.Application()
    local_app.router.add_post("/v1/chat/completions", local.chat)
    local_runner = web.AppRunner(local_app, handler_cancellation=True)
    await local_runner.setup()
    site = web.TCPSite(local_runner, "127.0.0.1", 0)
    await site.start()
    local_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    served = {MEMBER: Served(MEMBER, "llama_cpp_server", f"http://127.0.0.1:{local_port}", 1, 2048)}
    info = AgentInfo("laptop", served, lambda _: ready)
    async with aiohttp.ClientSession() as session:
        runner = web.AppRunner(agent_app(info, session), handler_cancellation=True)
        await runner.setup()
        assert runner.server is not None
        (sock,) = listening_sockets("127.0.0.1", 0, 16)
        listener = HttpsListener(sock, runner.server, tls, refusal, timeout=2.0)
        try:
            yield Running(sock.getsockname()[1], local, tls)
        finally:
            listener.close()
            await listener.wait_closed()
            await runner.cleanup()
    await local_runner.cleanup()
