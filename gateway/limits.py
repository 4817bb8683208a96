"""Per-client limits: requests and tokens per minute, requests at once, and the size of one
request.

A client is an API key's name (``anonymous`` when the gateway runs without keys). The rates
are sliding windows of the last 60 seconds:

- ``requests_per_minute``: requests started in the window;
- ``tokens_per_minute``: prompt and completion tokens of the requests that *ended* in the
  window (a request's tokens are known when it ends); a request is refused while the window
  holds the limit or more, so one long answer can overshoot once, never twice;
- ``concurrent``: requests being answered now.

Over one of these the request is refused with 429 and ``Retry-After`` (the seconds until the
window has room). ``max_tokens`` and ``max_prompt_tokens`` bound a single request: a request
without ``max_tokens`` gets the limit as its ``max_tokens``; one that asks for more, or whose
prompt is longer (estimated at four characters a token), is a 400 naming the limit, because
waiting cannot make it pass (a 429 would have SDKs retry it).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from backends.collect import estimate_prompt_tokens
from gateway.errors import InvalidRequest, RateLimited, TokensLimited

WINDOW = 60.0
Positive = Annotated[int, msgspec.Meta(ge=1)]


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """What one client may do; ``None`` is no limit."""

    requests_per_minute: Positive | None = None
    tokens_per_minute: Positive | None = None
    concurrent: Positive | None = None
    max_tokens: Positive | None = None
    max_prompt_tokens: Positive | None = None

    def over(self, base: Limits) -> Limits:
        """These limits, each unset one taken from ``base``."""
        mine = msgspec.structs.asdict(self)
        return msgspec.structs.replace(base, **{k: v for k, v in mine.items() if v is not None})


NO_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Client:
    """Who sent a request, as limits and logs know it: a key's name, never the key."""

    name: str
    limits: Limits = NO_LIMITS


ANONYMOUS = "anonymous"
NOBODY = Client(ANONYMOUS)


@dataclass(slots=True)
class _Window:
    """One client's recent use."""

    started: deque[float] = field(default_factory=deque)
    ended: deque[tuple[float, int]] = field(default_factory=deque)
    tokens: int = 0
    in_flight: int = 0

    def expire(self, now: float) -> None:
        while self.started and self.started[0] <= now - WINDOW:
            self.started.popleft()
        while self.ended and self.ended[0][0] <= now - WINDOW:
            self.tokens -= self.ended.popleft()[1]


class Limiter:
    """Admits a client's requests within its limits; one per app, no shared state."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._windows: dict[str, _Window] = {}

    def admit(self, client: Client) -> None:
        """Count a request of ``client`` as started, or raise :class:`RateLimited`."""
        limits, now = client.limits, self._clock()
        window = self._windows.setdefault(client.name, _Window())
        window.expire(now)
        _check_concurrent(limits, window)
        _check_requests(limits, window, now)
        _check_tokens(limits, window, now)
        window.started.append(now)
        window.in_flight += 1

    def release(self, client: Client, tokens: int) -> None:
        """A request of ``client`` ended, having used ``tokens`` (prompt and completion)."""
        window = self._windows.get(client.name)
        if window is None:
            return
        window.in_flight -= 1
        if tokens > 0:
            window.ended.append((self._clock(), tokens))
            window.tokens += tokens

    def usage(self, name: str) -> dict[str, int]:
        """What ``name`` used in the last minute and has in flight (for status pages)."""
        window = self._windows.get(name)
        if window is None:
            return {"requests": 0, "tokens": 0, "in_flight": 0}
        window.expire(self._clock())
        return {
            "requests": len(window.started),
            "tokens": window.tokens,
            "in_flight": window.in_flight,
        }


def _check_concurrent(limits: Limits, window: _Window) -> None:
    if limits.concurrent is not None and window.in_flight >= limits.concurrent:
        raise RateLimited(
            f"too many requests at once for this key: limit {limits.concurrent}",
            retry_after=1.0,
        )


def _check_requests(limits: Limits, window: _Window, now: float) -> None:
    limit = limits.requests_per_minute
    if limit is not None and len(window.started) >= limit:
        wait = window.started[len(window.started) - limit] + WINDOW - now
        raise RateLimited(
            f"rate limit reached for this key on requests per minute: limit {limit}, "
            f"used {len(window.started)}; try again in {wait:.0f} s",
            retry_after=wait,
        )


def _check_tokens(limits: Limits, window: _Window, now: float) -> None:
    limit = limits.tokens_per_minute
    if limit is None or window.tokens < limit:
        return
    left, wait = window.tokens, WINDOW
    for ended, tokens in window.ended:
        left -= tokens
        if left < limit:
            wait = ended + WINDOW - now
            break
    raise TokensLimited(
        f"rate limit reached for this key on tokens per minute: limit {limit}, "
        f"used {window.tokens}; try again in {wait:.0f} s",
        retry_after=wait,
    )


def sized(body: dict[str, Any], limits: Limits) -> dict[str, Any]:
    """``body`` (as forwarded: ``max_completion_tokens`` is already ``max_tokens``) within the
    client's size limits: ``max_tokens`` set to the limit when absent; :class:`InvalidRequest`
    naming the limit when the request asks for more."""
    _check_prompt(limits, body)
    cap = limits.max_tokens
    if cap is None:
        return body
    asked = body.get("max_tokens")
    if asked is None:
        return {**body, "max_tokens": cap}
    if isinstance(asked, int) and asked > cap:
        raise InvalidRequest(
            f"`max_tokens` is {asked}, more than this key's limit of {cap}",
            param="max_tokens",
            code="max_tokens_limit_exceeded",
        )
    return body


def _check_prompt(limits: Limits, body: dict[str, Any]) -> None:
    cap = limits.max_prompt_tokens
    if cap is None:
        return
    prompt_tokens = estimate_prompt_tokens(body.get("messages"), body.get("tools"))
    if prompt_tokens > cap:
        raise InvalidRequest(
            f"the prompt is about {prompt_tokens} tokens, more than this key's limit of {cap}",
            param="messages",
            code="prompt_limit_exceeded",
        )
