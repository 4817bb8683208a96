"""The ``booagent`` command: ``up``, ``serve``, ``init``, ``models pull`` and ``certs init``.

Other packages add commands as plugins, through the entry point group ``booagent.commands``
(``bench`` from :mod:`bench.cli`, ``eval`` from :mod:`evals.cli`): this module never imports
them, so imports only run downward (bench -> gateway -> ensemble -> backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from backends.errors import BooagentError
from backends.models import RichProgress, pull
from gateway.certs import DEFAULT_DIR as CERTS_DIR
from gateway.certs import init as init_certs
from gateway.keys import KeyStore
from gateway.keys_cli import keys
from gateway.logs import configure_logging
from gateway.loop import run
from gateway.node_cli import certs_node
from gateway.node_cli import node as agent_command
from gateway.runner import banner, missing_models, model_files, node_command
from gateway.runner import serve as serve_gateway
from gateway.runner import up as run_up
from gateway.settings import DEFAULT_CONFIG, Settings, exposure, load_settings
from gateway.status import show as show_status
from gateway.status import verify_option

PLUGINS = "booagent.commands"

_config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Cluster configuration (YAML); default: the packaged default cluster "
    "(`booagent init` writes an editable copy).",
)


def _load(config_path: Path | None, *, serving: bool = False) -> Settings:
    """The settings; for a command that serves, refused when they would expose the cluster
    to the network without keys (:func:`gateway.settings.exposure`)."""
    try:
        settings = load_settings(config_path or DEFAULT_CONFIG, os.environ)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    if not serving:
        return settings
    refusal = exposure(settings.server)
    if refusal is not None:
        raise click.ClickException(refusal)
    server = settings.server
    try:
        KeyStore(server.api_keys, server.keys_path, server.limits)  # loud now, not at start-up
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    return settings


class _Commands(click.Group):
    """The command group, with the commands other installed packages register as plugins."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *(e.name for e in _plugins())})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        found = [e for e in _plugins() if e.name == name]
        loaded: Any = found[0].load() if found else None
        return loaded if isinstance(loaded, click.Command) else None


def _plugins() -> list[Any]:
    return list(entry_points(group=PLUGINS))


@click.group(cls=_Commands)
def main() -> None:
    """booagent-cluster: a few llama.cpp nodes behind one OpenAI-compatible endpoint."""
    configure_logging()


@main.command()
@click.argument(
    "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("config")
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(directory: Path, force: bool) -> None:
    """Write an editable copy of the default cluster config to DIRECTORY/cluster.yaml."""
    target = directory / "cluster.yaml"
    if target.exists() and not force:
        raise click.ClickException(f"{target} exists; pass --force to overwrite it")
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_CONFIG, target)
    click.echo(f"wrote {target}; start the cluster with: booagent up --config {target}")


@main.group()
def models() -> None:
    """Manage the GGUF model files of local nodes."""


@models.command("pull")
@_config_option
@click.argument("names", nargs=-1)
def models_pull(config_path: Path | None, names: tuple[str, ...]) -> None:
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


@main.group("certs")
def certs_group() -> None:
    """Certificates for HTTPS: the cluster's own CA, and what it signs."""


@certs_group.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=CERTS_DIR)
@click.option("--san", "sans", multiple=True, help="Another name or IP of the gateway (repeat).")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def certs_init(directory: Path, sans: tuple[str, ...], force: bool) -> None:
    """Create a cluster CA and the gateway's certificate in DIRECTORY
    (default ~/.config/booagent/certs). Keys are written with mode 0600, never printed."""
    try:
        made = init_certs(directory.expanduser(), sans, force=force)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"wrote {made.ca.cert} (clients trust it) and {made.ca.key} (keep it private)")
    click.echo(f"wrote {made.gateway.cert} and {made.gateway.key} for {', '.join(made.sans)}")
    click.echo(
        f"serve HTTPS: BOOAGENT_TLS_CERT={made.gateway.cert} "
        f"BOOAGENT_TLS_KEY={made.gateway.key} booagent serve"
    )


@main.command()
@_config_option
def serve(config_path: Path | None) -> None:
    """Run only the gateway, against nodes that run elsewhere."""
    settings = _load(config_path, serving=True)
    configure_logging(settings.server.log_level)
    click.echo(banner(settings))
    run(serve_gateway(settings))


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
@click.option("--dry-run", is_flag=True, help="Check the config and models, print what would run.")
def up(config_path: Path | None, ready_timeout: float, log_dir: Path, dry_run: bool) -> None:
    """Start the local nodes, wait until they are ready, then serve the gateway."""
    settings = _load(config_path, serving=True)
    missing = missing_models(settings)
    if dry_run:
        _describe(settings, missing)
        return
    if missing:
        raise click.ClickException(
            "missing model files: " + ", ".join(missing) + "; run `booagent models pull` first"
        )
    configure_logging(settings.server.log_level)
    try:
        run(run_up(settings, ready_timeout, log_dir.expanduser()))
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("stopped before the nodes were ready", err=True)


def _describe(settings: Settings, missing: list[str]) -> None:
    """What ``up`` would start, for ``--dry-run``."""
    command, files = node_command(settings), model_files(settings)
    for node in settings.nodes:
        if node.local is None:
            where = f"(remote) {node.url}"
        elif node.member not in files:
            where = "(local, but its member names no model to run)"
        else:
            where = " ".join(command(node))
        click.echo(f"node {node.name} [{node.member}]: {where}")
    host, port = settings.server.host, settings.server.port
    click.echo(
        f"gateway: {settings.server.scheme}://{host}:{port}/v1 "
        f"(model {settings.server.virtual_model})"
    )
    for path in missing:
        click.echo(f"missing model file: {path} (run `booagent models pull`)")


@main.command()
@_config_option
@click.option("--url", help="The gateway's base URL; default: the config's address.")
@click.option("--key", envvar="BOOAGENT_API_KEY", help="API key (or BOOAGENT_API_KEY).")
@click.option(
    "--cacert",
    type=click.Path(dir_okay=False, path_type=Path),
    help="CA certificate to trust for an HTTPS gateway.",
)
@click.option("--watch", type=float, default=None, help="Redraw every N seconds.")
def status(
    config_path: Path | None, url: str | None, key: str | None, cacert: Path | None,
    watch: float | None,
) -> None:  # fmt: skip
    """The cluster at a glance: nodes, load, throughput, the last requests."""
    if url is None:
        server = _load(config_path).server
        host = "127.0.0.1" if server.host in ("0.0.0.0", "::") else server.host
        url = f"{server.scheme}://{host}:{server.port}"
    with contextlib.suppress(KeyboardInterrupt):
        show_status(url.rstrip("/"), key, verify_option(cacert), watch)


main.add_command(keys)
main.add_command(agent_command)
certs_group.add_command(certs_node)
