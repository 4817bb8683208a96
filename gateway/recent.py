"""The last requests and the cluster's recent throughput, for the dashboard and
``booagent status``: a bounded ring, fed once per ended request."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from gateway.record import CLIENT_CLOSED, Ended

WINDOW = 60.0


class Recent:
    """What the last ``size`` requests did, and the tokens of those that ended in the last
    minute."""

    def __init__(self, size: int = 50, clock: Callable[[], float] = time.time) -> None:
        self._requests: deque[Ended] = deque(maxlen=size)
        self._window: deque[tuple[float, int, int]] = deque()
        self._clock = clock

    def add(self, ended: Ended) -> None:
        self._requests.append(ended)  # summarised when read: most requests never are
        completion = ended.tokens[1]
        self._window.append((ended.at, completion, ended.outcome.status))
        self._expire(self._clock())

    def _expire(self, now: float) -> None:
        while self._window and self._window[0][0] <= now - WINDOW:
            self._window.popleft()

    def requests(self) -> list[dict[str, Any]]:
        """Newest first."""
        return [summary(ended) for ended in reversed(self._requests)]

    def throughput(self) -> dict[str, float]:
        """Requests, errors (any status of 400 or more but 499, the client leaving) and
        completion tokens per second over the last minute."""
        self._expire(self._clock())
        ended = list(self._window)
        return {
            "requests_per_second": round(len(ended) / WINDOW, 3),
            "errors_per_second": round(sum(1 for e in ended if _error(e[2])) / WINDOW, 3),
            "tokens_per_second": round(sum(e[1] for e in ended) / WINDOW, 2),
        }


def _error(status: int) -> bool:
    """An answer the client did not get, other than by leaving (499)."""
    return status >= 400 and status != CLIENT_CLOSED


def summary(ended: Ended) -> dict[str, Any]:
    """One request as the dashboard lists it: who asked, how it was decided, who won, why."""
    outcome, answer = ended.outcome, ended.outcome.answer
    why = {} if answer is None else dict(answer.why)
    prompt, completion = ended.tokens
    return {
        "at": round(ended.at, 3),
        "key": ended.client.name,
        "model": ended.model,
        "kind": ended.kind,
        "strategy": ended.strategy,
        "stream": ended.stream,
        "status": outcome.status,
        "node": ended.node,
        "members": list(dict.fromkeys(c.member for c in outcome.calls)),
        "why": _why(why),
        "attempts": ended.attempts,
        "failures": ended.failures,
        "ttft_s": None if outcome.first_token is None else round(outcome.first_token, 3),
        "total_s": round(ended.total, 3),
        "tokens_in": prompt,
        "tokens_out": completion,
        "error": outcome.error,
    }


def _why(why: dict[str, Any]) -> str:
    """The decision in a few words, from the strategy's own record."""
    if "method" in why:
        return f"{why['method']}: {why.get('winner', '?')} of {why.get('answered', '?')}"
    if "escalations" in why:
        return f"{why['escalations']} escalation(s)"
    if "writers" in why:
        return "program ran" if why.get("ran") else str(why.get("why") or "no program")
    if "route" in why:
        return str(why["route"])
    return ""
