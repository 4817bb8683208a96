"""Named API keys, from the config and from a keys file that is reloaded while serving.

The keys file (``server.keys_file`` or ``BOOAGENT_KEYS_FILE``) is YAML::

    keys:
      - name: open-webui              # what logs and metrics show; never the key
        sha256: 9f86d0...             # the key's SHA-256 (``booagent keys add`` writes this)
        limits: {requests_per_minute: 60, concurrent: 2}
      - name: scripts
        key: sk-...                   # or the key itself

Each key's ``limits`` are laid over ``server.limits``. Keys listed in ``server.api_keys`` (or
``BOOAGENT_API_KEYS``) are named ``key-1``, ``key-2``, ... in their order.

:class:`KeyStore` holds the current :class:`Keyring` and replaces it when the file changes
(checked every second) or on :meth:`KeyStore.reload` (SIGHUP): requests in flight keep the
key they were let in with; a file that does not load leaves the keys as they were, with an
error in the log.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import structlog
import yaml

from backends.errors import BooagentError
from backends.filewatch import Watched, every
from gateway.limits import ANONYMOUS, NO_LIMITS, Client, Limits

_log = structlog.get_logger("booagent.keys")

Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")]
Secret = Annotated[str, msgspec.Meta(pattern=r"^[!-~]+$")]
Digest = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]


class KeysError(BooagentError):
    """The keys file cannot be read or is wrong; the message says where."""

    code = "keys_error"


class KeyEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    name: Name
    key: Secret | None = None
    sha256: Digest | None = None
    limits: Limits | None = None


class KeysFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keys: tuple[KeyEntry, ...] = ()


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "sk-booagent-" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Keyring:
    """The keys in force: each key's digest with the client it identifies. Empty and
    ``required`` False: no keys, every request is the anonymous client."""

    clients: Mapping[str, Client]
    required: bool
    anonymous: Client

    def identify(self, key: str) -> Client | None:
        """The client whose key this is (looked up by digest, so no comparison of secrets
        can be timed), or None."""
        return self.clients.get(digest(key))

    @property
    def names(self) -> list[str]:
        return sorted({c.name for c in self.clients.values()})


def keyring(
    api_keys: Sequence[str], file: KeysFile | None, defaults: Limits = NO_LIMITS
) -> Keyring:
    """The keyring of the config's keys and the file's; auth is required once either exists
    (a keys file with no keys in it refuses everyone rather than letting everyone in)."""
    clients = {digest(k): Client(f"key-{i}", defaults) for i, k in enumerate(api_keys, 1)}
    entries = file.keys if file else ()
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise KeysError("key names must be unique")
    for entry in entries:
        limits = defaults if entry.limits is None else entry.limits.over(defaults)
        for found in _digests(entry):
            clients[found] = Client(entry.name, limits)
    required = bool(api_keys) or file is not None
    return Keyring(clients, required, Client(ANONYMOUS, defaults))


def _digests(entry: KeyEntry) -> list[str]:
    if (entry.key is None) == (entry.sha256 is None):
        raise KeysError(f"key {entry.name!r}: give exactly one of `key` and `sha256`")
    return [digest(entry.key) if entry.key is not None else str(entry.sha256)]


def read_keys_file(path: Path) -> KeysFile:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise KeysError(f"cannot read keys file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise KeysError(f"{path} is not valid YAML: {exc}") from exc
    try:
        return msgspec.convert(data, KeysFile, strict=False)
    except msgspec.ValidationError as exc:
        raise KeysError(f"{path}: {exc}") from exc


class KeyStore:
    """The keyring in force, replaced when the keys file changes."""

    def __init__(
        self, api_keys: Sequence[str], path: Path | None, defaults: Limits = NO_LIMITS
    ) -> None:
        self._api_keys = tuple(api_keys)
        self._path = path
        self._defaults = defaults
        self._files = None if path is None else Watched(path)
        self.keyring = keyring(self._api_keys, self._read(), defaults)

    def _read(self) -> KeysFile | None:
        return None if self._path is None else read_keys_file(self._path)

    def reload(self) -> bool:
        """Read the keys file again; True when the new keys are in force. A file that does not
        load changes nothing (the error is logged, without any key)."""
        if self._files is None:
            return False
        self._files.seen()
        try:
            self.keyring = keyring(self._api_keys, self._read(), self._defaults)
        except KeysError as exc:
            _log.error("keys_reload_failed", path=str(self._path), error=exc.message)
            return False
        _log.info("keys_reloaded", path=str(self._path), names=self.keyring.names)
        return True

    def changed(self) -> bool:
        return self._files is not None and self._files.changed()

    def refresh(self) -> bool:
        """Reload if the file changed; True when new keys are in force."""
        return self.changed() and self.reload()

    async def watch(self, interval: float = 1.0) -> None:
        """Reload whenever the file changes, until cancelled."""
        await every(interval, self.refresh)


def add_key(path: Path, name: str, limits: Limits | None = None) -> str:
    """Append a new key named ``name`` to the keys file (created, mode 0600, if missing),
    storing only its digest; returns the key, which is shown once and kept nowhere."""
    current = read_keys_file(path) if path.exists() else KeysFile()
    if any(e.name == name for e in current.keys):
        raise KeysError(f"{path} already has a key named {name!r}")
    key = new_key()
    entry = msgspec.convert({"name": name, "sha256": digest(key)}, KeyEntry)
    if limits is not None and limits != NO_LIMITS:
        entry = msgspec.structs.replace(entry, limits=limits)
    updated = KeysFile((*current.keys, entry))
    keyring((), updated)  # the file written is one that loads
    _write(path, msgspec.to_builtins(updated))
    return key


def _write(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write("# booagent API keys (reloaded while serving); `booagent keys add NAME`\n")
        yaml.safe_dump(data, out, sort_keys=False)
    os.replace(temporary, path)
