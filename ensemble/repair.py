"""Repair: when a checker can say what is wrong with an answer, ask once more, saying it.

Small models often break a rule they were given ("exactly 8 words", "no letter 'a'", "valid
JSON") and fix it when told precisely what they did ("yours: 9 words"). The checkers are the
cascade's own (:mod:`ensemble.checks`), so a repair
costs one more call only when an answer is known to be wrong. Answers that are tool calls are
never repaired (the conversation would need the calls' results).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from backends.base import ChatRequest
from ensemble.candidates import Candidate

FEEDBACK = (
    "Your answer does not follow my instructions: {problems}. Write the answer again so that "
    "it follows every instruction of my previous message. Reply with the corrected answer only."
)


def repair_request(request: ChatRequest, candidate: Candidate, found: Sequence[str]) -> ChatRequest:
    """The conversation so far, the faulty answer, and a message naming its faults."""
    messages = [
        *(request.body.get("messages") or []),
        {"role": "assistant", "content": candidate.text},
        {"role": "user", "content": FEEDBACK.format(problems="; ".join(found))},
    ]
    return replace(request, body={**request.body, "messages": messages})
