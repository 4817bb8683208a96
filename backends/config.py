"""Typed, frozen settings for members, nodes and the policies that govern them.

These are plain msgspec structs so a YAML mapping converts into them with field-named errors;
``gateway.settings`` reads the files and the environment, this module only defines shapes.
"""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec

NodeKind = Literal["auto", "llama_cpp_server", "llama_server"]


class Member(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A model the cluster offers, served by one or more nodes.

    ``speed`` ranks members for chores (higher is faster); ``n_ctx`` is the context each node
    of the member serves (requests are fitted to it). ``tools`` says the member can call tools:
    its chat template renders them (native ``llama-server`` nodes also report it) and it is
    asked for requests that offer tools; a member without it gets the tools described in its
    system message, and only when no member with it can answer.
    """

    name: str
    role: str = ""
    tags: tuple[str, ...] = ()
    n_ctx: int = 2048
    speed: int = 1
    model: str | None = None
    tools: bool = True


class LocalProcess(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How `booagent up` starts this node as a local `llama_cpp.server` process."""

    port: int
    threads: int = 1
    extra_args: tuple[str, ...] = ()


class Node(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One llama.cpp server. ``capacity`` overrides the learned number of slots; ``host`` names
    the machine it runs on (default: its URL's host name), for the limits under ``hosts``."""

    name: str
    member: str
    url: str
    kind: NodeKind = "auto"
    capacity: int | None = None
    api_key: str | None = None
    local: LocalProcess | None = None
    host: str | None = None
    tls_name: str | None = None
    """The name the node's certificate must carry when it is reached over ``https://``
    (a node agent's name; default: the URL's host)."""
    priority: int = 0
    """The node's tier: requests go to the lowest tier with a node that can serve, and fall
    back to the next when none can."""

    @property
    def host_name(self) -> str:
        return self.host or urlsplit(self.url).hostname or self.url


class Host(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A machine that several nodes share: at most ``max_active`` requests run on it at once.

    Nodes on one machine share its cores (and llama.cpp's threads spin while they wait), so two
    generations at once on a 2-core machine each run far slower than half speed; a host limit
    queues the second request instead.
    """

    name: str
    max_active: Annotated[int, msgspec.Meta(ge=1)]


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Seconds. ``stall`` is the longest gap between content chunks (keep-alives don't count).

    ``first_token`` grows with the prompt: a node reads a long prompt before its first token
    (Open WebUI's 6,623-token turns took a 1.5B model 146 s on 2 CPU cores), so each prompt
    token adds ``1 / prompt_rate`` seconds; ``prompt_rate`` is the fewest prompt tokens per
    second a node is expected to read.
    """

    connect: float = 3.0
    first_token: float = 60.0
    stall: float = 20.0
    total: float = 600.0
    queue: float = 60.0
    prompt_rate: Annotated[float, msgspec.Meta(gt=0)] = 30.0


class Retry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One request-wide budget: ``attempts`` node calls at most, whatever failed."""

    attempts: int = 3
    max_retry_after: float = 5.0


class Breaker(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Open after ``failures`` consecutive failures; allow one trial after ``open_seconds``."""

    failures: int = 3
    open_seconds: float = 10.0


class Health(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Probe every ``interval`` seconds, giving up on one probe after ``timeout``."""

    interval: float = 2.0
    timeout: float = 2.0


class Policies(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    timeouts: Timeouts = Timeouts()
    retry: Retry = Retry()
    breaker: Breaker = Breaker()
    health: Health = Health()


class Cluster(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The cluster's mutual TLS (the gateway's side) and discovery of node agents.

    ``ca``, ``cert`` and ``key``: the cluster CA and the gateway's certificate and key
    (``booagent certs init`` writes them to ``~/.config/booagent/certs``), used for every
    ``https://`` node and every discovered one. With ``discover``, node agents that announce
    themselves over mDNS join the pool once their certificate checks out, and leave it when
    they say goodbye or have not been seen for ``forget_after`` seconds; ``allow`` (when not
    empty) names the only node agents that may join.
    """

    ca: str = "~/.config/booagent/certs/ca.pem"
    cert: str = "~/.config/booagent/certs/gateway.pem"
    key: str = "~/.config/booagent/certs/gateway.key"
    discover: bool = False
    forget_after: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    allow: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    """The addresses to listen for announcements on (default: every interface)."""
