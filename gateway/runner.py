"""Running the gateway: alone (``serve``), or after starting the local nodes (``up``).

``up`` starts one ``llama_cpp.server`` process per local node, waits until they answer, then
serves the gateway in the same event loop; SIGINT or SIGTERM stops the gateway and then every
node. Logging is configured here, by the process that runs the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog
import uvicorn

from backends.config import Member
from backends.models import lookup
from backends.supervisor import CommandBuilder, NodeSupervisor, llama_cpp_commands
from gateway.app import create_app
from gateway.settings import Settings


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
    base = f"http://{shown}:{port}/v1"
    model = settings.server.virtual_model
    return (
        f"\nbooagent-cluster is ready at {base}\n"
        f"  models:  curl {base}/models\n"
        f"  chat:    curl {base}/chat/completions -H 'Content-Type: application/json' \\\n"
        f'             -d \'{{"model": "{model}", "messages": '
        f'[{{"role": "user", "content": "Hello!"}}]}}\'\n'
        "  Ctrl-C stops the gateway and every node it started.\n"
    )


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the caller decides what a signal stops."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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


def _server(settings: Settings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    return _Server(config)


async def serve(settings: Settings) -> None:
    """The gateway alone, until a signal stops it."""
    with _Stopper() as stopper:
        await stopper.serve(_server(settings))


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
            await stopper.serve(_server(settings))
            log.info("stopping", nodes=list(supervisor.states()))
