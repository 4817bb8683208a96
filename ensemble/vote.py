"""Combining candidates: a majority vote for short answers, agreement for free text and code.

Candidates a checker faults (code that does not parse, a broken checkable instruction, JSON
that does not match the requested format) are dropped first, unless all of them are faulted.
Candidates are ordered by member preference (then seed) before anything else, so the result
never depends on the order in which they finished.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ensemble.candidates import Candidate
from ensemble.signals import code_parses, short_form, similarity


@dataclass(frozen=True, slots=True)
class Verdict:
    """The chosen candidate and why it won."""

    winner: Candidate
    method: str
    why: dict[str, Any]


def ordered(candidates: Sequence[Candidate], preference: Sequence[str]) -> list[Candidate]:
    rank = {name: i for i, name in enumerate(preference)}
    return sorted(candidates, key=lambda c: (rank.get(c.member, len(rank)), c.sample))


def combine(
    candidates: Sequence[Candidate],
    preference: Sequence[str],
    *,
    code: bool,
    valid: Callable[[Candidate], bool] | None = None,
) -> Verdict:
    """Pick one of ``candidates`` (all answered; at least one). ``valid`` is the checker (for
    code, by default, that the code parses); code is never decided by a vote."""
    pool = ordered(candidates, preference)
    check = valid or ((lambda c: code_parses(c.text)) if code else None)
    passing = [c for c in pool if check(c)] if check else pool
    dropped = len(pool) - len(passing) if passing else 0
    pool = passing or pool
    keys = [short_form(c.text) for c in pool]
    if len(pool) > 1 and not code and all(k is not None for k in keys):
        verdict = _vote(pool, [k for k in keys if k is not None])
    else:
        verdict = _agreement(pool)
    if check:
        verdict.why["dropped_invalid"] = dropped
    return verdict


def _vote(pool: list[Candidate], keys: list[str]) -> Verdict:
    counts = Counter(keys)
    best = max(counts.values())
    winner_key = next(k for k in keys if counts[k] == best)
    winner = pool[keys.index(winner_key)]
    why = {"answer": winner_key, "votes": best, "of": len(pool), "tally": dict(counts)}
    return Verdict(winner, "majority_vote", why)


def _agreement(pool: list[Candidate]) -> Verdict:
    if len(pool) == 1:
        return Verdict(pool[0], "only_candidate", {"agreement": None})
    scores = [
        sum(similarity(c.text, o.text) for o in pool if o is not c) / (len(pool) - 1) for c in pool
    ]
    best = max(scores)
    winner = pool[scores.index(best)]
    return Verdict(winner, "agreement", {"agreement": round(best, 3)})
