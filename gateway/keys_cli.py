"""``booagent keys``: named API keys in the keys file (see :mod:`gateway.keys`)."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from backends.errors import BooagentError
from gateway.keys import add_key, keyring, read_keys_file
from gateway.limits import Limits

DEFAULT_KEYS_FILE = Path("~/.config/booagent/keys.yaml")

_file_option = click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_KEYS_FILE,
    show_default=True,
    envvar="BOOAGENT_KEYS_FILE",
    help="The keys file (the gateway's server.keys_file or BOOAGENT_KEYS_FILE).",
)


@click.group()
def keys() -> None:
    """Named API keys: a serving gateway picks up changes to its keys file by itself (or on
    SIGHUP); logs and metrics show a key's name, never the key."""


@keys.command("add")
@click.argument("name")
@_file_option
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute.")
@click.option("--concurrent", type=click.IntRange(min=1), help="Requests at once.")
@click.option("--max-tokens", type=click.IntRange(min=1), help="Largest max_tokens.")
@click.option("--max-prompt", type=click.IntRange(min=1), help="Largest prompt, in tokens.")
def add(
    name: str,
    path: Path,
    rpm: int | None,
    tpm: int | None,
    concurrent: int | None,
    max_tokens: int | None,
    max_prompt: int | None,
) -> None:
    """Create a key named NAME; prints the key once (the file keeps only its SHA-256)."""
    limits = Limits(rpm, tpm, concurrent, max_tokens, max_prompt)
    try:
        key = add_key(path.expanduser(), name, limits)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    click.echo(f"added key {name!r} to {path}; it is shown only now:\n\n  {key}\n")
    click.echo(f"serve with: BOOAGENT_KEYS_FILE={path} booagent up   (or server.keys_file)")


@keys.command("list")
@_file_option
def list_keys(path: Path) -> None:
    """The keys' names and limits (never the keys)."""
    try:
        file = read_keys_file(path.expanduser())
        keyring((), file)
    except BooagentError as exc:
        raise click.ClickException(exc.message) from exc
    for entry in file.keys:
        limits = msgspec.to_builtins(entry.limits or Limits())
        shown = " ".join(f"{k}={v}" for k, v in limits.items()) or "no limits of its own"
        click.echo(f"{entry.name}: {shown}")
