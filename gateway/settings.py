"""Settings: read once, from the environment, then the YAML file, then defaults.

The result is a frozen :class:`Settings`. A wrong or missing key is an error that names it
(``members[1].n_ctx: Expected `int`, got `str```), never a silent default.

Environment overrides: ``BOOAGENT_HOST``, ``BOOAGENT_PORT``, ``BOOAGENT_API_KEYS``
(comma-separated; keys are secrets and never logged), ``BOOAGENT_KEYS_FILE``,
``BOOAGENT_ALLOW_OPEN``, ``BOOAGENT_MODELS_DIR``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import msgspec
import yaml

from backends.config import Cluster, Host, Member, Node, Policies
from backends.errors import BooagentError
from backends.mtls import TlsError, TlsFiles, gateway_context
from ensemble.classify import Kind
from ensemble.config import StrategySettings
from gateway.limits import NO_LIMITS, Limits
from gateway.tls import pair_problem

DEFAULT_CONFIG = Path(__file__).resolve().parent / "defaults" / "cluster.yaml"
"""The default cluster, shipped inside the package (``booagent init`` writes an editable copy)."""


class ConfigError(BooagentError):
    """The configuration file or environment is wrong; the message says where."""

    code = "config_error"


ApiKey = Annotated[str, msgspec.Meta(pattern=r"^[!-~]+$")]
"""Printable ASCII without spaces: header values arrive as bytes (and the SDK sends ASCII
only), so a key with other characters could never be presented."""


class Server(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8100
    api_keys: tuple[ApiKey, ...] = ()
    max_body_bytes: int = 4 * 1024 * 1024
    virtual_model: str = "booagent-cluster"
    log_level: str = "info"
    keys_file: str | None = None
    """Named keys with limits, reloaded while serving (:mod:`gateway.keys`)."""
    limits: Limits = NO_LIMITS
    """Every client's limits unless its key says otherwise (:mod:`gateway.limits`)."""
    allow_open: bool = False
    """Serve beyond loopback without API keys (refused otherwise: see :func:`exposure`)."""
    tls_cert: str | None = None
    """PEM certificate (chain) to serve HTTPS with, together with ``tls_key`` (:mod:`gateway.tls`;
    ``booagent certs init`` makes both). Env: ``BOOAGENT_TLS_CERT``, ``BOOAGENT_TLS_KEY``."""
    tls_key: str | None = None

    @property
    def tls_files(self) -> tuple[Path, Path] | None:
        """The certificate and key to serve HTTPS with, or None: plain HTTP."""
        if self.tls_cert is None or self.tls_key is None:
            return None
        return Path(self.tls_cert).expanduser(), Path(self.tls_key).expanduser()

    @property
    def scheme(self) -> str:
        return "http" if self.tls_files is None else "https"

    @property
    def keys_path(self) -> Path | None:
        return None if self.keys_file is None else Path(self.keys_file).expanduser()

    @property
    def keyed(self) -> bool:
        return bool(self.api_keys) or self.keys_file is not None


class Routes(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Member preference per kind of request, most preferred first."""

    code: tuple[str, ...] = ()
    general: tuple[str, ...] = ()
    chore: tuple[str, ...] = ()


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    members: tuple[Member, ...]
    nodes: tuple[Node, ...]
    hosts: tuple[Host, ...] = ()
    server: Server = Server()
    routes: Routes = Routes()
    policies: Policies = Policies()
    strategies: StrategySettings = StrategySettings()
    models_dir: str = "~/.cache/booagent/models"
    cluster: Cluster | None = None
    """Mutual TLS to ``https://`` nodes and discovery of node agents (:mod:`backends.mtls`,
    :mod:`backends.discovery`)."""

    def cluster_tls(self) -> TlsFiles | None:
        """The gateway's mutual-TLS files, when the config has a ``cluster`` section."""
        if self.cluster is None:
            return None
        c = self.cluster
        cert, key, ca = (Path(p).expanduser() for p in (c.cert, c.key, c.ca))
        try:
            return TlsFiles(cert, key, ca, gateway_context)
        except TlsError as exc:
            raise ConfigError(f"cluster: {exc.message} (`booagent certs init` makes them)") from exc

    def member(self, name: str) -> Member | None:
        return next((m for m in self.members if m.name == name), None)

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir).expanduser()


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the config file (default: the packaged default cluster) and apply the environment."""
    raw = _read_yaml(path or DEFAULT_CONFIG)
    _apply_env(raw, environ or {})
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path or DEFAULT_CONFIG}: {exc}") from exc
    _check_references(settings)
    _check_tls(settings.server)
    return settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with `members` and `nodes`")
    return data


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    server = raw.setdefault("server", {}) or {}
    raw["server"] = server
    if "BOOAGENT_HOST" in environ:
        server["host"] = environ["BOOAGENT_HOST"]
    if "BOOAGENT_PORT" in environ:
        server["port"] = environ["BOOAGENT_PORT"]
    if "BOOAGENT_API_KEYS" in environ:
        keys = environ["BOOAGENT_API_KEYS"].split(",")
        server["api_keys"] = [k.strip() for k in keys if k.strip()]
    if "BOOAGENT_MODELS_DIR" in environ:
        raw["models_dir"] = environ["BOOAGENT_MODELS_DIR"]
    if environ.get("BOOAGENT_KEYS_FILE"):
        server["keys_file"] = environ["BOOAGENT_KEYS_FILE"]
    if "BOOAGENT_ALLOW_OPEN" in environ:
        server["allow_open"] = environ["BOOAGENT_ALLOW_OPEN"].strip().lower() in _TRUE
    _apply_tls_env(server, environ)


_TRUE = ("1", "true", "yes", "on")


def exposure(server: Server) -> str | None:
    """Why the gateway must not start as configured, or None: bound beyond loopback with no
    API keys, anyone who can reach the machine could use it, unless ``allow_open`` says
    that is meant (LiteLLM refuses to start without a master key, for the same reason)."""
    if server.keyed or server.allow_open or _loopback(server.host):
        return None
    return (
        f"refusing to serve on {server.host}:{server.port} without API keys: anyone on the "
        "network could use the cluster. Create a key with `booagent keys add NAME` (it writes "
        "~/.config/booagent/keys.yaml) and start with BOOAGENT_KEYS_FILE=~/.config/booagent/"
        "keys.yaml (or server.keys_file in the config, or BOOAGENT_API_KEYS=<key>); or bind "
        "to 127.0.0.1; or, if an open gateway is really meant, set server.allow_open: true "
        "(BOOAGENT_ALLOW_OPEN=1)"
    )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _apply_tls_env(server: dict[str, Any], environ: Mapping[str, str]) -> None:
    """``BOOAGENT_TLS_CERT`` and ``BOOAGENT_TLS_KEY`` replace the file's paths; set empty, they
    turn HTTPS off."""
    for name, field in (("BOOAGENT_TLS_CERT", "tls_cert"), ("BOOAGENT_TLS_KEY", "tls_key")):
        if name in environ:
            server[field] = environ[name] or None


def _check_tls(server: Server) -> None:
    """Both ``tls_cert`` and ``tls_key`` or neither; both readable PEM that belong together."""
    unset = [name for name in ("tls_cert", "tls_key") if getattr(server, name) is None]
    if len(unset) == 1:
        raise ConfigError(
            f"server.{unset[0]} is missing: HTTPS needs both server.tls_cert and "
            "server.tls_key (env: BOOAGENT_TLS_CERT, BOOAGENT_TLS_KEY)"
        )
    problem = server.tls_files and pair_problem(*server.tls_files)
    if problem:
        raise ConfigError(f"server.tls_cert/tls_key: {problem}")


def _check_references(settings: Settings) -> None:
    names = {m.name for m in settings.members}
    if len(names) != len(settings.members):
        raise ConfigError("member names must be unique")
    if len({n.name for n in settings.nodes}) != len(settings.nodes):
        raise ConfigError("node names must be unique")
    for node in settings.nodes:
        if node.member not in names:
            raise ConfigError(f"node {node.name!r} names unknown member {node.member!r}")
        if node.url.startswith("https:") and settings.cluster is None:
            raise ConfigError(
                f"node {node.name!r} is reached over https (a node agent): add a `cluster:` "
                "section with the CA and the gateway's certificate (`booagent certs init`)"
            )
    _check_hosts(settings)
    routes = settings.routes
    for kind, members in (
        ("code", routes.code),
        ("general", routes.general),
        ("chore", routes.chore),
    ):
        for name in members:
            if name not in names:
                raise ConfigError(f"routes.{kind} names unknown member {name!r}")
    if settings.server.virtual_model in names:
        raise ConfigError("a member may not be named like the virtual model")
    _check_strategy_members(settings, names)


def _check_hosts(settings: Settings) -> None:
    if len({h.name for h in settings.hosts}) != len(settings.hosts):
        raise ConfigError("host names must be unique")
    used = {n.host_name for n in settings.nodes}
    for host in settings.hosts:
        if host.name not in used:
            known = ", ".join(sorted(used))
            raise ConfigError(f"hosts: no node runs on {host.name!r} (nodes run on: {known})")


_KINDS = tuple(kind.value for kind in Kind)


def _check_kinds(strategies: StrategySettings) -> None:
    for field, table, extra in (
        ("auto", strategies.auto, ()),
        ("cascade.ladders", strategies.cascade.ladders, ("default",)),
        ("ensemble.members_by_kind", strategies.ensemble.members_by_kind, ()),
    ):
        for kind in table:
            if kind not in (*_KINDS, *extra):
                known = ", ".join((*_KINDS, *extra))
                raise ConfigError(f"strategies.{field}: unknown kind {kind!r} (kinds: {known})")


def _named_members(strategies: StrategySettings) -> Iterator[tuple[str, str]]:
    """Every (setting, member name) pair the strategies' settings name."""
    for kind, ladder in strategies.cascade.ladders.items():
        yield from ((f"cascade.ladders.{kind}", name) for name in ladder)
    yield from (("ensemble.members", name) for name in strategies.ensemble.members)
    for kind, members in strategies.ensemble.members_by_kind.items():
        yield from ((f"ensemble.members_by_kind.{kind}", name) for name in members)
    yield from (("program.members", name) for name in strategies.program.members)
    yield from (("tested.members", name) for name in strategies.tested.members)
    if strategies.tested.test_writer is not None:
        yield ("tested.test_writer", strategies.tested.test_writer)


def _check_strategy_members(settings: Settings, names: set[str]) -> None:
    strategies = settings.strategies
    _check_kinds(strategies)
    if "auto" in strategies.auto.values():
        raise ConfigError(
            "strategies.auto maps kinds to route, cascade, ensemble, program or tested, not auto"
        )
    for field, name in _named_members(strategies):
        if name not in names:
            raise ConfigError(f"strategies.{field} names unknown member {name!r}")
