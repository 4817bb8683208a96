"""What a strategy that consults several members decided, and the answer it gives.

The cascade, the ensemble and the program strategy each ask members for whole answers, judge
them, and return a :class:`Decision`: every call made (with its verdict), the winner, and why.
:func:`decided` turns a decision into the committed :class:`ensemble.base.Answer` the gateway
streams, the same way for all three; when no call answered, the client gets the error the pool
would have given for the same failures (see :meth:`Decision.failed`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from backends.base import Chunk
from backends.errors import (
    AllNodesFailed,
    BooagentError,
    CapacityError,
    NodeError,
    NodeRejected,
    PromptTooLong,
)
from ensemble.base import NO_USAGE, Answer, Call, Usage, added
from ensemble.candidates import Candidate, text_chunks


@dataclass(frozen=True, slots=True)
class Decision:
    """Every call a strategy made, in order, the index of the winner among them (None: no
    call answered), and why it won. ``rewrite`` is the text the client gets instead of the
    winner's own (the program strategy answers with the program's result), with the winner's
    usage."""

    strategy: str
    candidates: tuple[Candidate, ...]
    winner: int | None
    why: Mapping[str, Any] = field(default_factory=dict)
    rewrite: str | None = None

    def calls(self, *, texts: bool) -> tuple[Call, ...]:
        return tuple(c.call(text=texts) for c in self.candidates)

    def unseen(self) -> Usage:
        """Tokens of the calls whose answer the client does not get."""
        total: Usage = NO_USAGE
        for index, candidate in enumerate(self.candidates):
            if index != self.winner and candidate.ok:
                total = added(total, candidate.usage)
        return total

    def answer(self, *, texts: bool) -> Answer:
        """The winner's answer, replayed; the error of the failed calls when there is none."""
        if self.winner is None:
            raise self.failed()
        won = self.candidates[self.winner]
        chunks = won.chunks if self.rewrite is None else text_chunks(self.rewrite, won.usage)
        return Answer(
            _replay(chunks),
            self.strategy,
            calls=self.calls(texts=texts),
            node=won.node or None,
            why=self.why,
            unseen=self.unseen(),
        )

    def then(self, fallback: Answer, *, texts: bool) -> Answer:
        """The answer of the strategy this one fell back to, with this decision's calls first."""
        return Answer(
            fallback.chunks,
            self.strategy,
            live=fallback.live,
            calls=(*self.calls(texts=texts), *fallback.calls),
            node=fallback.node,
            why={**self.why, **fallback.why},
            unseen=added(self.unseen(), fallback.unseen),
            live_outcome="fallback",
        )

    def failed(self) -> BooagentError:
        """What the client gets when no call answered, as :class:`backends.pool.Pool` would
        say it: the node's own refusal when the request was refused (its fault, not the
        nodes'); the cluster being busy when every call found it busy; else every node
        failure, summed up (504 when all timed out, 503 when all were overloaded)."""
        errors = [c.failure for c in self.candidates if c.failure is not None]
        refused = [e for e in errors if isinstance(e, NodeRejected | PromptTooLong)]
        if refused:
            return refused[-1]
        if errors and all(isinstance(e, CapacityError) for e in errors):
            return errors[-1]
        failures = list(_node_errors(errors))
        reasons = "; ".join(f.message for f in failures) or "no member answered"
        return AllNodesFailed(f"every member of the {self.strategy} failed: {reasons}",
                              failures=failures)  # fmt: skip


def _node_errors(errors: Iterable[BooagentError]) -> Iterable[NodeError]:
    for error in errors:
        if isinstance(error, AllNodesFailed):
            yield from error.failures
        elif isinstance(error, NodeError):
            yield error


async def _replay(chunks: tuple[Chunk, ...]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk


@asynccontextmanager
async def decided(decision: Awaitable[Decision], *, texts: bool) -> AsyncIterator[Answer]:
    """The committed answer of a strategy that decides first (cancelling the block cancels
    the decision and every call still running in it)."""
    yield (await decision).answer(texts=texts)
