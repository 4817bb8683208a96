"""Tests for gateway.limits: per-client rates, requests at once, and request sizes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import InvalidRequest, RateLimited, TokensLimited
from gateway.limits import Client, Limiter, Limits, sized


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter() -> tuple[Limiter, Clock]:
    clock = Clock()
    return Limiter(clock), clock


class TestRates:
    def test_requests_per_minute_refuses_the_next_with_the_wait(self) -> None:
        """Over its requests per minute, a client is told to come back when the oldest
        request of the window is a minute old."""
        limits, clock = limiter()
        alice = Client("alice", Limits(requests_per_minute=2))
        limits.admit(alice)
        clock.now += 10
        limits.admit(alice)
        with pytest.raises(RateLimited) as refused:
            limits.admit(alice)
        assert refused.value.retry_after == pytest.approx(50.0)
        assert refused.value.status_code == 429 and "requests per minute" in refused.value.message
        clock.now += 50
        limits.admit(alice)

    def test_one_clients_limit_leaves_another_alone(self) -> None:
        """Limits are kept per client."""
        limits, _ = limiter()
        alice = Client("alice", Limits(requests_per_minute=1))
        limits.admit(alice)
        limits.admit(Client("bob", Limits(requests_per_minute=1)))
        with pytest.raises(RateLimited):
            limits.admit(alice)

    def test_concurrent_requests_count_until_released(self) -> None:
        """A client at its limit of requests at once gets in again once one ends."""
        limits, _ = limiter()
        alice = Client("alice", Limits(concurrent=1))
        limits.admit(alice)
        with pytest.raises(RateLimited) as refused:
            limits.admit(alice)
        assert refused.value.retry_after == 1.0
        limits.release(alice, 10)
        limits.admit(alice)

    def test_tokens_per_minute_count_ended_requests(self) -> None:
        """Tokens of ended requests fill the window; the wait is until enough of them age
        out to fall below the limit."""
        limits, clock = limiter()
        alice = Client("alice", Limits(tokens_per_minute=100))
        for tokens in (60, 50):
            limits.admit(alice)
            limits.release(alice, tokens)
            clock.now += 5
        with pytest.raises(TokensLimited) as refused:
            limits.admit(alice)
        assert refused.value.type == "tokens"
        assert refused.value.retry_after == pytest.approx(50.0)
        clock.now += 50
        limits.admit(alice)

    def test_usage_reports_the_window(self) -> None:
        limits, clock = limiter()
        alice = Client("alice")
        limits.admit(alice)
        limits.admit(alice)
        limits.release(alice, 30)
        assert limits.usage("alice") == {"requests": 2, "tokens": 30, "in_flight": 1}
        clock.now += 61
        assert limits.usage("alice") == {"requests": 0, "tokens": 0, "in_flight": 1}
        assert limits.usage("nobody") == {"requests": 0, "tokens": 0, "in_flight": 0}


@settings(max_examples=100, deadline=None)
@given(
    limit=st.integers(1, 5),
    gaps=st.lists(st.floats(0, 40, allow_nan=False), min_size=1, max_size=40),
)
def test_never_more_requests_in_a_minute_than_the_limit(limit: int, gaps: list[float]) -> None:
    """Whatever the arrival times, no 60-second window admits more than the limit, and a
    refused request is told a wait after which it is admitted."""
    limits, clock = limiter()
    alice = Client("alice", Limits(requests_per_minute=limit))
    admitted: list[float] = []
    for gap in gaps:
        clock.now += gap
        try:
            limits.admit(alice)
        except RateLimited as refused:
            assert refused.retry_after > 0
            later = clock.now + refused.retry_after + 1e-6
            assert len([t for t in admitted if t > later - 60]) < limit
            continue
        admitted.append(clock.now)
        assert len([t for t in admitted if t > clock.now - 60]) <= limit


class TestSizes:
    def test_a_missing_max_tokens_gets_the_limit(self) -> None:
        body = sized({"messages": []}, Limits(max_tokens=256))
        assert body["max_tokens"] == 256

    def test_a_larger_max_tokens_is_a_400_naming_the_limit(self) -> None:
        """Waiting cannot make it pass, so not a 429 (which SDKs retry)."""
        with pytest.raises(InvalidRequest) as refused:
            sized({"messages": [], "max_tokens": 1000}, Limits(max_tokens=256))
        assert refused.value.status_code == 400 and refused.value.param == "max_tokens"
        assert "256" in refused.value.message

    def test_a_long_prompt_is_a_400(self) -> None:
        messages = [{"role": "user", "content": "word " * 400}]
        with pytest.raises(InvalidRequest) as refused:
            sized({"messages": messages}, Limits(max_prompt_tokens=100))
        assert refused.value.code == "prompt_limit_exceeded"
        assert sized({"messages": messages}, Limits(max_prompt_tokens=1000))

    def test_no_limits_leave_the_body_as_it_is(self) -> None:
        body = {"messages": [], "max_tokens": 99999}
        assert sized(body, Limits()) is body


def test_a_keys_limits_are_laid_over_the_defaults() -> None:
    mine = Limits(requests_per_minute=5).over(Limits(requests_per_minute=60, concurrent=2))
    assert (mine.requests_per_minute, mine.concurrent) == (5, 2)
