"""A node as the pool sees it: its backend, health, admission queue and recent figures."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from backends.admission import Admission
from backends.base import Backend, ChatRequest, Reply
from backends.config import Member, Node
from backends.health import HealthTracker
from backends.http import Probe

_ALPHA = 0.3


class ProbingBackend(Backend, Protocol):
    """A backend that can also report its readiness without generating tokens, count a
    prompt's tokens when it can do so without taking a slot (None when it cannot), and stream
    the completion of a raw prompt as chat chunks (how ``llama_cpp.server`` continues an
    answer another node began: :mod:`backends.continuation`)."""

    async def probe(self, timeout: float) -> Probe: ...

    async def count_tokens(self, body: Mapping[str, Any]) -> int | None: ...

    def complete(self, request: ChatRequest) -> AbstractAsyncContextManager[Reply]: ...


@dataclass(slots=True)
class NodeStats:
    """Exponentially weighted recent latency (time to first token) and decode speed."""

    ttft: float | None = None
    tokens_per_second: float | None = None
    served: int = 0
    failed: int = 0

    def record(self, ttft: float, tokens: int, duration: float) -> None:
        self.served += 1
        self.ttft = _ewma(self.ttft, ttft)
        decode = duration - ttft
        if tokens > 1 and decode > 0:
            self.tokens_per_second = _ewma(self.tokens_per_second, (tokens - 1) / decode)


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast a node has recently answered: time to first token and decode speed."""

    ttft: float
    tokens_per_second: float

    def seconds(self, tokens: int) -> float:
        """The expected time of an answer of ``tokens`` tokens."""
        return self.ttft + tokens / self.tokens_per_second

    @classmethod
    def of(cls, stats: NodeStats) -> Pace | None:
        if stats.ttft is None or not stats.tokens_per_second:
            return None
        return cls(stats.ttft, stats.tokens_per_second)


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - _ALPHA) * old + _ALPHA * new


@dataclass(slots=True)
class ManagedNode:
    """Everything the pool tracks about one node."""

    spec: Node
    member: Member
    backend: ProbingBackend
    health: HealthTracker
    admission: Admission
    stats: NodeStats = field(default_factory=NodeStats)
    kind: str = "unknown"
    host: Admission | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def cheap_logprobs(self) -> bool:
        """Token log-probabilities cost this node nothing measurable: native llama-server
        (``llama_cpp.server`` generates about 6x slower with ``top_logprobs``)."""
        return self.kind == "llama_server"

    @property
    def load(self) -> float:
        """Outstanding work per slot, of the node or of its host if that is busier."""
        own = self.admission.load
        return own if self.host is None else max(own, self.host.load)

    @property
    def free(self) -> bool:
        """True when a request would start at once (on the node and on its host)."""
        return bool(self.admission.free) and (self.host is None or bool(self.host.free))

    def apply_probe(self, probe: Probe) -> None:
        """Take a probe's verdict; learn kind and slot count unless the config fixes them."""
        self.health.probed(probe.state, probe.error)
        if probe.kind != "unknown":
            self.kind = probe.kind
        if self.spec.capacity is None and probe.slots:
            self.admission.capacity = probe.slots

    def snapshot(self) -> dict[str, Any]:
        """The node's state for `GET /v1/cluster`."""
        return {
            "name": self.name,
            "member": self.member.name,
            "url": self.spec.url,
            "kind": self.kind,
            "state": self.health.readiness,
            "breaker": self.health.breaker,
            "in_flight": self.admission.in_flight,
            "queued": self.admission.queued,
            "capacity": self.admission.capacity,
            "host": self.spec.host_name,
            "host_in_flight": None if self.host is None else self.host.in_flight,
            "host_capacity": None if self.host is None else self.host.capacity,
            "host_queued": None if self.host is None else self.host.queued,
            "ttft_seconds": _round(self.stats.ttft),
            "tokens_per_second": _round(self.stats.tokens_per_second),
            "served": self.stats.served,
            "failed": self.stats.failed,
            "last_error": self.health.last_error or None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
