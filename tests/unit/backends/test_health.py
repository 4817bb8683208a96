"""Tests for backends.health: readiness plus the circuit breaker, on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from backends.config import Breaker
from backends.health import CLOSED, HALF_OPEN, OPEN, HealthTracker


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def tracker(failures: int = 3, open_seconds: float = 10.0) -> tuple[HealthTracker, FakeClock]:
    clock = FakeClock()
    return HealthTracker(Breaker(failures=failures, open_seconds=open_seconds), clock), clock


def opened(failures: int = 2) -> tuple[HealthTracker, FakeClock]:
    health, clock = tracker(failures=failures)
    for _ in range(failures):
        health.failed("boom")
    return health, clock


class TestReadiness:
    def test_unprobed_node_is_available(self) -> None:
        """Before the first probe a node may take requests (the breaker guards it)."""
        health, _ = tracker()
        assert health.readiness == "unknown"
        assert health.available()

    def test_loading_node_is_not_available_and_not_failed(self) -> None:
        """A loading node takes no requests, but loading is not a failure."""
        health, _ = tracker()
        health.probed("loading")
        assert not health.available()
        assert health.failures == 0
        assert health.breaker == CLOSED

    def test_down_probe_counts_as_a_failure(self) -> None:
        """A failed probe makes the node unavailable and feeds the breaker."""
        health, _ = tracker(failures=1)
        health.probed("down", "connection refused")
        assert not health.available()
        assert health.failures == 1
        assert health.last_error == "connection refused"
        assert health.breaker == OPEN

    def test_down_probe_without_error_gets_a_reason(self) -> None:
        """A failed probe always leaves a last error to show."""
        health, _ = tracker()
        health.probed("down")
        assert health.last_error == "probe failed"

    def test_ready_probe_forgets_failed_probes_while_closed(self) -> None:
        """A good probe forgets failed probes that did not open the breaker."""
        health, _ = tracker(failures=3)
        health.probed("down")
        health.failed("a")
        health.probed("ready")
        health.failed("b")
        assert health.breaker == CLOSED and health.failures == 2

    def test_ready_probe_does_not_forget_failed_requests(self) -> None:
        """A node whose health check passes but whose every request fails trips its breaker,
        however often it is probed in between."""
        health, _ = tracker(failures=3)
        for error in ("a", "b", "c"):
            health.failed(error)
            health.probed("ready")
        assert health.breaker == OPEN

    def test_ready_probe_does_not_close_an_open_breaker(self) -> None:
        """Only a served request closes the breaker; a probe merely sees the node up."""
        health, clock = opened()
        health.probed("ready")
        assert health.breaker == OPEN
        assert not health.available()
        clock.now += 10
        assert health.breaker == HALF_OPEN
        assert health.available()


class TestBreaker:
    def test_opens_after_consecutive_failures(self) -> None:
        """``failures`` consecutive failures open the breaker; fewer do not."""
        health, _ = tracker(failures=3)
        health.failed("a")
        health.failed("b")
        assert health.breaker == CLOSED
        health.failed("c")
        assert health.breaker == OPEN
        assert not health.available()

    def test_success_resets_the_count(self) -> None:
        """A success between failures means they are not consecutive."""
        health, _ = tracker(failures=2)
        health.failed("a")
        health.succeeded()
        health.failed("b")
        assert health.breaker == CLOSED

    def test_half_open_after_open_seconds(self) -> None:
        """Once ``open_seconds`` have passed, one trial is allowed."""
        health, clock = opened()
        clock.now += 9.9
        assert health.breaker == OPEN
        clock.now += 0.1
        assert health.breaker == HALF_OPEN
        assert health.available()

    def test_half_open_grants_one_trial(self) -> None:
        """While the trial runs, no other request is let through."""
        health, clock = opened()
        clock.now += 10
        health.claim()
        assert not health.available()

    def test_trial_success_closes(self) -> None:
        """The trial succeeding closes the breaker and clears the count."""
        health, clock = opened()
        clock.now += 10
        health.claim()
        health.succeeded()
        assert health.breaker == CLOSED
        assert health.failures == 0
        assert health.available()

    def test_trial_failure_reopens_for_another_period(self) -> None:
        """The trial failing opens the breaker again from now."""
        health, clock = opened()
        clock.now += 10
        health.claim()
        health.failed("trial failed")
        assert health.breaker == OPEN
        clock.now += 9.9
        assert health.breaker == OPEN

    def test_release_returns_the_trial(self) -> None:
        """A trial that ends without a verdict lets the next request try."""
        health, clock = opened()
        clock.now += 10
        health.claim()
        health.release()
        assert health.available()

    def test_claim_while_closed_blocks_nobody(self) -> None:
        """Claiming only matters in half-open: closed nodes take concurrent requests."""
        health, _ = tracker()
        health.claim()
        assert health.available()


class HealthMachine(RuleBasedStateMachine):
    """Drives a tracker with probes, requests and time; checks the breaker's promises."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.health = HealthTracker(Breaker(), self.clock)
        self.consecutive = 0
        self.probe_failures = 0
        self.trial_held = False

    @initialize(failures=st.integers(1, 4), open_seconds=st.floats(0.5, 20))
    def setup(self, failures: int, open_seconds: float) -> None:
        self.health = HealthTracker(Breaker(failures, open_seconds), self.clock)

    @rule(seconds=st.floats(0, 30))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule(readiness=st.sampled_from(["ready", "loading", "down"]))
    def probe(self, readiness: str) -> None:
        was_closed = self.health.breaker == CLOSED
        self.health.probed(readiness)
        if readiness == "down":
            self._failure()
            self.probe_failures += 1
        elif readiness == "ready" and was_closed:
            self.consecutive -= self.probe_failures
            self.probe_failures = 0

    @precondition(lambda self: self.health.available())
    @rule()
    def claim(self) -> None:
        """Take a request without its verdict yet; in half-open it is the one trial."""
        was_half_open = self.health.breaker == HALF_OPEN
        self.health.claim()
        self.trial_held = self.trial_held or was_half_open

    @precondition(lambda self: self.health.available())
    @rule()
    def claim_and_succeed(self) -> None:
        self.health.claim()
        self.health.succeeded()
        self.consecutive = 0
        self.probe_failures = 0
        self.trial_held = False
        assert self.health.breaker == CLOSED

    @precondition(lambda self: self.health.available())
    @rule()
    def claim_and_fail(self) -> None:
        was_half_open = self.health.breaker == HALF_OPEN
        self.health.claim()
        self.health.failed("request failed")
        self._failure()
        if was_half_open:
            assert self.health.breaker == OPEN

    @rule()
    def succeed(self) -> None:
        """A request admitted earlier succeeds (possibly while the breaker is open)."""
        self.health.succeeded()
        self.consecutive = 0
        self.probe_failures = 0
        self.trial_held = False
        assert self.health.breaker == CLOSED

    @rule()
    def release(self) -> None:
        self.health.release()
        self.trial_held = False

    def _failure(self) -> None:
        self.consecutive += 1
        self.trial_held = False

    @invariant()
    def unavailable_when_open_or_not_ready(self) -> None:
        if self.health.breaker == OPEN or self.health.readiness in ("loading", "down"):
            assert not self.health.available()

    @invariant()
    def consecutive_failures_trip_the_breaker(self) -> None:
        if self.consecutive >= self.health.policy.failures:
            assert self.health.breaker != CLOSED

    @invariant()
    def one_trial_at_a_time(self) -> None:
        if self.trial_held:
            assert not self.health.available()


HealthMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
TestHealthMachine = HealthMachine.TestCase
