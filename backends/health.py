"""Per-node health: readiness from probes plus a circuit breaker fed by live requests.

A pure state machine with an injected clock and no I/O. Readiness is what the last probe saw
(``unknown`` until the first one): ``ready``, ``loading`` (up but not serving, e.g. a model
still loading: not dead) or ``down``. The breaker counts consecutive failures of probes and
requests alike; a good probe forgets the failed probes, never the failed requests (a node
whose ``/health`` is fine but which fails every request must still trip its breaker):

    closed --(failures >= threshold)--> open --(open_seconds pass)--> half_open
    half_open --(the one trial succeeds)--> closed
    half_open --(the trial fails)--> open
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from backends.config import Breaker

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(slots=True)
class HealthTracker:
    """Decides whether a node may take a request now."""

    policy: Breaker
    clock: Callable[[], float]
    readiness: str = "unknown"
    failures: int = 0
    probe_failures: int = 0
    last_error: str = ""
    _opened_at: float | None = None
    _trial_running: bool = False

    @property
    def breaker(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self.clock() - self._opened_at >= self.policy.open_seconds:
            return HALF_OPEN
        return OPEN

    def available(self) -> bool:
        """True when a request may be sent: ready (or not yet probed) and the breaker lets it."""
        if self.readiness not in ("ready", "unknown"):
            return False
        state = self.breaker
        return state == CLOSED or (state == HALF_OPEN and not self._trial_running)

    def claim(self) -> None:
        """Take the single half-open trial, if this request is it."""
        if self.breaker == HALF_OPEN:
            self._trial_running = True

    def release(self) -> None:
        """A claimed request ended without a verdict on the node (e.g. the client left)."""
        self._trial_running = False

    def succeeded(self) -> None:
        self.failures = self.probe_failures = 0
        self._trial_running = False
        self._opened_at = None

    def failed(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        was_trial, self._trial_running = self._trial_running, False
        if was_trial or self.failures >= self.policy.failures:
            self._opened_at = self.clock()

    def probed(self, readiness: str, error: str = "") -> None:
        """Record a probe. A failed probe counts as a failure; a good one forgets the failed
        probes (not the failed requests) and does not close the breaker by itself (only a
        served request does), but makes the node eligible again."""
        self.readiness = readiness
        if readiness == "down":
            self.probe_failures += 1
            self.failed(error or "probe failed")
        elif readiness == "ready" and self._opened_at is None:
            self.failures -= self.probe_failures
            self.probe_failures = 0
