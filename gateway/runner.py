"""Running the gateway: alone (``serve``), or after starting the local nodes (``up``).

``up`` starts one ``llama_cpp.server`` process per local node, waits until they answer, then
serves the gateway in the same event loop; SIGINT or SIGTERM stops the gateway and then every
node. Logging is configured here, by the process that runs the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from backends.config import Member
from backends.models import lookup
from backends.supervisor import CommandBuilder, NodeSupervisor, llama_cpp_commands
from gateway.app import PoolFactory, create_app
from gateway.settings import Settings
from gateway.tls import HttpsListener, ServerTls, listening_sockets, refusal


def model_files(settings: Settings) -> dict[str, Path]:
    """Each member's GGUF file in the models folder (members without a catalog model: none)."""
    return {
        m.name: settings.models_path / lookup(m.model).filename for m in settings.members if m.model
    }


def missing_models(settings: Settings) -> list[str]:
    """The model files the local nodes need that are not there yet."""
    files = model_files(settings)
    local = {n.member for n in settings.nodes if n.local is not None}
    return sorted(str(files.get(m, m)) for m in local if m not in files or not files[m].exists())


def node_command(settings: Settings, python: str = sys.executable) -> CommandBuilder:
    """What ``up`` runs for a local node: ``python -m llama_cpp.server`` with its model."""
    files = model_files(settings)
    members = {m.name: m for m in settings.members}

    def model_path(member: Member) -> Path:
        return files[member.name]

    return llama_cpp_commands(members, model_path, python=python)


def banner(settings: Settings) -> str:
    host, port = settings.server.host, settings.server.port
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"{settings.server.scheme}://{shown}:{port}/v1"
    model = settings.server.virtual_model
    curl = _curl(settings)
    return (
        f"\nbooagent-cluster is ready at {base}\n"
        f"  models:  {curl} {base}/models\n"
        f"  chat:    {curl} {base}/chat/completions -H 'Content-Type: application/json' \\\n"
        f'             -d \'{{"model": "{model}", "messages": '
        f'[{{"role": "user", "content": "Hello!"}}]}}\'\n'
        "  Ctrl-C stops the gateway and every node it started.\n"
    )


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the caller decides what a signal stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _curl(settings: Settings) -> str:
    """``curl``, told to trust the cluster CA when ``booagent certs init`` put one beside the
    gateway's certificate."""
    files = settings.server.tls_files
    ca = files[0].parent / "ca.pem" if files else None
    return f"curl --cacert {ca}" if ca and ca.exists() else "curl"


class _HttpsServer(_Server):
    """uvicorn serving HTTPS on connections a :class:`gateway.tls.HttpsListener` accepts (it
    answers plain HTTP with a 400), with the certificate and key re-read when they change.
    Only start-up differs from uvicorn's: its shutdown closes the listeners and then the
    connections, as it does its own servers."""

    def __init__(self, config: uvicorn.Config, tls: ServerTls) -> None:
        super().__init__(config)
        self.tls = tls
        self._watch: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        try:
            bound = listening_sockets(self.config.host, self.config.port, self.config.backlog)
        except OSError as exc:
            structlog.get_logger("booagent.serve").error("listen_failed", error=str(exc))
            await self.lifespan.shutdown()
            sys.exit(STARTUP_FAILURE)
        listeners = [HttpsListener(sock, self._protocol, self.tls, refusal) for sock in bound]
        self.servers = [cast("asyncio.Server", listener) for listener in listeners]
        self._watch = asyncio.create_task(self.tls.watch())
        self.started = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await super().shutdown(sockets)

    def _protocol(self) -> asyncio.Protocol:
        """uvicorn's HTTP protocol for one connection, made as its own start-up makes it."""
        return self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )


class _Stopper:
    """SIGINT/SIGTERM handler: cancels start-up, or asks a serving gateway to shut down."""

    def __init__(self) -> None:
        self.task = asyncio.current_task()
        self.server: uvicorn.Server | None = None
        self._loop = asyncio.get_running_loop()

    def __enter__(self) -> _Stopper:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.add_signal_handler(sig, self._stop)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._loop.remove_signal_handler(sig)

    def _stop(self) -> None:
        if self.server is None:
            if self.task is not None:
                self.task.cancel()
        elif self.server.should_exit:
            self.server.force_exit = True
        else:
            self.server.should_exit = True

    async def serve(self, server: uvicorn.Server) -> None:
        self.server = server
        await server.serve()


def gateway_server(settings: Settings, pool_factory: PoolFactory | None = None) -> uvicorn.Server:
    """uvicorn serving the gateway: HTTPS when ``server.tls_cert``/``tls_key`` are set."""
    config = uvicorn.Config(
        create_app(settings, pool_factory=pool_factory),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    files = settings.server.tls_files
    return _Server(config) if files is None else _HttpsServer(config, ServerTls(*files))


async def serve(settings: Settings) -> None:
    """The gateway alone, until a signal stops it."""
    with _Stopper() as stopper:
        await stopper.serve(gateway_server(settings))


async def up(settings: Settings, ready_timeout: float, log_dir: Path) -> None:
    """Start the local nodes, wait until they are ready, then serve the gateway; a signal
    stops the gateway, then every node."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = structlog.get_logger("booagent.up")
    with _Stopper() as stopper:
        async with NodeSupervisor(settings.nodes, node_command(settings), log_dir) as supervisor:
            log.info("nodes_starting", nodes=list(supervisor.states()), log_dir=str(log_dir))
            await supervisor.wait_ready(ready_timeout)
            log.info("nodes_ready", nodes=list(supervisor.states()))
            print(banner(settings), flush=True)
            await stopper.serve(gateway_server(settings))
            log.info("stopping", nodes=list(supervisor.states()))
