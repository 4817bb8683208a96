"""What a request did: the answer's ``booagent`` object and the request's one log line.

Both are built at the end of a request from the values the strategy returned (its
:class:`ensemble.base.Answer`: the calls it made, why it chose, the node reply it streamed)
and from what the gateway measured while relaying (the streamed call's latency and tokens).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from backends.collect import Accumulator
from backends.errors import BooagentError
from ensemble.base import Answer, Call, Usage, added, failure_names, node_failures
from gateway.limits import Client

CLIENT_CLOSED = 499
_log = structlog.get_logger("booagent.request")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one request ended. ``answer`` and ``calls`` are there when a strategy answered
    (``calls`` includes the streamed node call); ``failures`` name the failed node attempts of
    a request that got no answer."""

    status: int
    error: str | None = None
    answer: Answer | None = None
    calls: tuple[Call, ...] = ()
    usage: Usage | None = None
    first_token: float | None = None
    failures: tuple[str, ...] = ()

    @classmethod
    def failed(cls, error: BooagentError, first_token: float | None = None) -> Outcome:
        names = failure_names(node_failures(error))
        return cls(error.status_code, error.message, first_token=first_token, failures=names)


def calls_of(answer: Answer, acc: Accumulator, latency: float) -> tuple[Call, ...]:
    """Every call of the answer, the streamed one with what was measured relaying it."""
    return answer.every_call(latency=latency, tokens=acc.usage()["completion_tokens"])


def usage_of(answer: Answer, acc: Accumulator) -> dict[str, int]:
    """Tokens of every member call the request caused, not only the answer's."""
    return added(acc.usage(), answer.unseen)


def booagent(
    answer: Answer, calls: tuple[Call, ...], *, kind: str, requested: str, explain: bool = False
) -> dict[str, Any]:
    """The answer's ``booagent`` object: the strategy, the kind of request, who answered,
    every call with its node, attempts, failures, queue wait, latency and tokens, and why."""
    return {
        "strategy": answer.strategy,
        "requested": requested,
        "kind": kind,
        "node": answer.node,
        "attempts": attempts_of(calls),
        "failures": failures_of(calls),
        **({"context": context} if (context := fitted(calls)) else {}),
        **({"continued": handed} if (handed := continued(calls)) else {}),
        **answer.why,
        "calls": [c.as_dict() for c in calls],
    }


def attempts_of(calls: tuple[Call, ...]) -> int:
    """Node attempts over every call."""
    return sum(len(c.attempts) for c in calls)


def failures_of(calls: tuple[Call, ...]) -> list[str]:
    """Failed node attempts over every call, in order."""
    return [f for c in calls for f in c.failures]


def continued(calls: tuple[Call, ...]) -> list[dict[str, Any]]:
    """Every hand-over of a streamed answer to another node of its member, in order."""
    return [c.as_dict() for call in calls for c in call.continued]


def fitted(calls: tuple[Call, ...]) -> list[str]:
    """What fitting the request to members' contexts did, over every call (members left out,
    ``max_tokens`` clamped), each note once."""
    return list(dict.fromkeys(note for c in calls for note in c.fitted))


@dataclass(frozen=True, slots=True)
class Ended:
    """A request that ended, with what the logs, metrics and status pages say about it."""

    outcome: Outcome
    model: str
    requested: str
    kind: str
    stream: bool
    total: float
    client: Client
    at: float = 0.0
    """Wall-clock time of the end (seconds since the epoch)."""

    @property
    def strategy(self) -> str:
        """The strategy that answered (the one asked for when none did)."""
        answer = self.outcome.answer
        return self.requested if answer is None else answer.strategy

    @property
    def node(self) -> str | None:
        answer = self.outcome.answer
        return None if answer is None else answer.node

    @property
    def attempts(self) -> int:
        outcome = self.outcome
        return attempts_of(outcome.calls) or len(outcome.failures)

    @property
    def failures(self) -> list[str]:
        outcome = self.outcome
        return failures_of(outcome.calls) or list(outcome.failures)

    @property
    def continued(self) -> list[dict[str, Any]]:
        return continued(self.outcome.calls)

    @property
    def queue_wait(self) -> float:
        return sum(c.queue_wait for c in self.outcome.calls)

    @property
    def tokens(self) -> tuple[int, int]:
        """Prompt and completion tokens (0 and 0 when the request got no answer)."""
        usage = self.outcome.usage
        return (usage["prompt_tokens"], usage["completion_tokens"]) if usage else (0, 0)


def log_request(ended: Ended) -> None:
    """The request's one log line (the key's name comes from the request's log context)."""
    outcome, usage = ended.outcome, ended.outcome.usage
    _log.info(
        "chat_completion",
        status=outcome.status,
        model=ended.model,
        strategy=ended.strategy,
        kind=ended.kind,
        stream=ended.stream,
        node=ended.node,
        attempts=ended.attempts,
        failures=ended.failures,
        queue_wait_s=round(ended.queue_wait, 4),
        ttft_s=None if outcome.first_token is None else round(outcome.first_token, 4),
        total_s=round(ended.total, 4),
        tokens_in=usage["prompt_tokens"] if usage else None,
        tokens_out=usage["completion_tokens"] if usage else None,
        error=outcome.error,
        **({"continued": handed} if (handed := ended.continued) else {}),
    )
