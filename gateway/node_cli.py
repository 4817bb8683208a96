"""``booagent node``: run this machine as a node of a cluster (see :mod:`backends.agent_run`),
and ``booagent certs node``: the certificate a joining machine needs."""

from __future__ import annotations

import os
from pathlib import Path

import click

from backends.agent_run import AgentSettings, Serve, TlsPaths, run_agent
from backends.errors import BooagentError
from backends.models import lookup
from gateway.certs import DEFAULT_DIR as CERTS_DIR
from gateway.certs import node_bundle
from gateway.logs import configure_logging
from gateway.loop import run

_MODELS_DIR = Path("~/.cache/booagent/models")


def _serve(text: str, models_dir: Path) -> Serve:
    """``MEMBER=MODEL[:N_CTX[:SLOTS]]``: MODEL a catalog name (fetched by ``booagent models
    pull``) or a path to a GGUF file."""
    member, sep, rest = text.partition("=")
    if not sep or not member or not rest:
        raise click.BadParameter(f"{text!r}: expected MEMBER=MODEL[:N_CTX[:SLOTS]]")
    model, *numbers = rest.split(":")
    try:
        n_ctx, slots = (int(n) for n in [*numbers, "4096", "1"][:2])
    except ValueError as exc:
        raise click.BadParameter(f"{text!r}: N_CTX and SLOTS are numbers") from exc
    path = Path(model).expanduser()
    if path.suffix != ".gguf":
        try:
            path = models_dir.expanduser() / lookup(model).filename
        except BooagentError as exc:
            raise click.BadParameter(exc.message) from exc
    if not path.is_file():
        raise click.BadParameter(f"{path} is missing (run `booagent models pull {model}`)")
    return Serve(member, path, n_ctx, slots)


@click.command("node")
@click.option(
    "--name",
    default=lambda: os.uname().nodename,
    show_default="host name",
    help="The node's name: its certificate must carry it.",
)
@click.option(
    "--serve",
    "serves",
    multiple=True,
    required=True,
    help="MEMBER=MODEL[:N_CTX[:SLOTS]], repeatable; MODEL a catalog name or a .gguf.",
)
@click.option(
    "--certs",
    type=click.Path(file_okay=False, path_type=Path),
    default=CERTS_DIR,
    show_default=True,
    help="Holds ca.pem, NAME.pem, NAME.key (`booagent certs node`).",
)
@click.option("--host", default="0.0.0.0", show_default=True)
@click.option("--port", type=int, default=8443, show_default=True)
@click.option("--threads", type=int, default=0, help="Threads per model (0: cores / models).")
@click.option(
    "--native/--python",
    default=None,
    help="Native llama-server or llama_cpp.server (default: native when found).",
)
@click.option(
    "--priority",
    type=int,
    default=0,
    show_default=True,
    help="Tier: the gateway uses lower tiers first (0: the GPU desktop).",
)
@click.option(
    "--announce/--no-announce",
    default=True,
    show_default=True,
    help="Announce the node over mDNS (off for networks without multicast).",
)
@click.option(
    "--models-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=_MODELS_DIR,
    show_default=True,
)
def node(  # noqa: PLR0913 (one option each)
    name: str, serves: tuple[str, ...], certs: Path, host: str, port: int, threads: int,
    native: bool | None, priority: int, announce: bool, models_dir: Path,
) -> None:  # fmt: skip
    """Serve this machine's models to the cluster's gateway, over mutual TLS."""
    configure_logging()
    certs = certs.expanduser()
    tls = TlsPaths(certs / f"{name}.pem", certs / f"{name}.key", certs / "ca.pem")
    for path in (tls.cert, tls.key, tls.ca):
        if not path.is_file():
            raise click.ClickException(
                f"{path} is missing: on the gateway's machine run `booagent certs node {name}` "
                f"and copy the folder it writes to {certs} here"
            )
    settings = AgentSettings(
        name, tuple(_serve(s, models_dir) for s in serves), tls, host, port, threads, native,
        priority, announce,
    )  # fmt: skip
    try:
        run(run_agent(settings))
    except (BooagentError, ValueError) as exc:
        raise click.ClickException(getattr(exc, "message", str(exc))) from exc


@click.command("node")
@click.argument("name")
@click.option(
    "--certs",
    type=click.Path(file_okay=False, path_type=Path),
    default=CERTS_DIR,
    show_default=True,
    help="The cluster CA's folder (`booagent certs init`).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the node's files (default: ./NAME-certs).",
)
@click.option("--san", "sans", multiple=True, help="Another name or IP of the node.")
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def certs_node(
    name: str, certs: Path, out: Path | None, sans: tuple[str, ...], force: bool
) -> None:
    """Issue node NAME a certificate signed by the cluster CA, for `booagent node --name NAME`
    on the machine that joins. Copy the folder there yourself (scp, a USB stick): keys never
    travel over the cluster's network."""
    target = (out or Path(f"{name}-certs")).expanduser()
    try:
        bundle = node_bundle(certs.expanduser(), name, target, sans, force=force)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"wrote {bundle.node.cert}, {bundle.node.key} (private) and {bundle.ca}")
    click.echo(
        f"on {name}: copy {target}/ to ~/.config/booagent/certs/, then run\n"
        f"  booagent node --name {name} --serve MEMBER=MODEL"
    )
