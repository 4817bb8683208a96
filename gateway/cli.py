"""The ``booagent`` command: ``up``, ``serve`` and ``models pull``.

``up`` starts one ``llama_cpp.server`` process per local node, waits until they answer, then
serves the gateway in the same event loop; Ctrl-C or SIGTERM stops the gateway and then every
node. ``serve`` runs only the gateway, for nodes that run elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import click
import structlog
import uvicorn

from backends.config import Member
from backends.errors import BooagentError
from backends.models import RichProgress, lookup, pull
from backends.supervisor import NodeSupervisor, llama_cpp_commands
from gateway.app import create_app
from gateway.logs import configure_logging
from gateway.settings import DEFAULT_CONFIG, Settings, load_settings

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_CONFIG,
    show_default=True,
    help="Cluster configuration (YAML).",
)


def _load(config_path: Path) -> Settings:
    try:
        return load_settings(config_path, os.environ)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc


@click.group()
def main() -> None:
    """booagent-cluster: a few llama.cpp nodes behind one OpenAI-compatible endpoint."""
    configure_logging()


@main.group()
def models() -> None:
    """Manage the GGUF model files of local nodes."""


@models.command("pull")
@_config_option
@click.argument("names", nargs=-1)
def models_pull(config_path: Path, names: tuple[str, ...]) -> None:
    """Fetch, assemble and verify models (default: those the config's members use)."""
    settings = _load(config_path)
    wanted = names or tuple(m.model for m in settings.members if m.model)
    try:
        with RichProgress() as progress:
            paths = pull(settings.models_path, wanted, progress=progress)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    for path in paths:
        click.echo(f"ready: {path}")


def _model_file(settings: Settings) -> dict[str, Path]:
    return {
        m.name: settings.models_path / lookup(m.model).filename for m in settings.members if m.model
    }


def _check_models(settings: Settings) -> Mapping[str, Path]:
    files = _model_file(settings)
    local = {n.member for n in settings.nodes if n.local is not None}
    missing = [str(files.get(m, m)) for m in local if m not in files or not files[m].exists()]
    if missing:
        raise click.ClickException(
            "missing model files: " + ", ".join(missing) + "; run `booagent models pull` first"
        )
    return files


def _banner(settings: Settings) -> str:
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


async def _serve(settings: Settings) -> None:
    with _Stopper() as stopper:
        await stopper.serve(_server(settings))


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


@main.command()
@_config_option
def serve(config_path: Path) -> None:
    """Run only the gateway, against nodes that run elsewhere."""
    settings = _load(config_path)
    click.echo(_banner(settings))
    asyncio.run(_serve(settings))


@main.command()
@_config_option
@click.option(
    "--ready-timeout", default=300.0, show_default=True, help="Seconds to wait for nodes."
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("~/.cache/booagent/logs"),
    show_default=True,
    help="Where each node's output goes.",
)
def up(config_path: Path, ready_timeout: float, log_dir: Path) -> None:
    """Start the local nodes, wait until they are ready, then serve the gateway."""
    settings = _load(config_path)
    files = _check_models(settings)
    try:
        asyncio.run(_up(settings, files, ready_timeout, log_dir.expanduser()))
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("stopped before the nodes were ready", err=True)


async def _up(
    settings: Settings, files: Mapping[str, Path], ready_timeout: float, log_dir: Path
) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    members = {m.name: m for m in settings.members}

    def model_path(member: Member) -> Path:
        return files[member.name]

    command = llama_cpp_commands(members, model_path, python=sys.executable)
    log = structlog.get_logger("booagent.up")
    with _Stopper() as stopper:
        async with NodeSupervisor(settings.nodes, command, log_dir) as supervisor:
            log.info("nodes_starting", nodes=list(supervisor.states()), log_dir=str(log_dir))
            await supervisor.wait_ready(ready_timeout)
            log.info("nodes_ready", nodes=list(supervisor.states()))
            click.echo(_banner(settings))
            await stopper.serve(_server(settings))
            log.info("stopping", nodes=list(supervisor.states()))
