"""Repair: when a checker can say what is wrong with an answer, ask once more, saying it.

Small models often break a rule they were given ("exactly 8 words", "no letter 'a'", "valid
JSON") and fix it when told precisely what they did ("yours: 9 words"). The checkers are the
cascade's own signals (:mod:`ensemble.instructions`, :mod:`ensemble.signals`), so a repair
costs one more call only when an answer is known to be wrong. Answers that are tool calls are
never repaired (the conversation would need the calls' results).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from backends.base import ChatRequest
from ensemble.candidates import Candidate
from ensemble.classify import Kind, last_user_text
from ensemble.instructions import broken_rules
from ensemble.signals import code_parses, json_matches

FEEDBACK = (
    "Your answer does not follow my instructions: {problems}. Write the answer again so that "
    "it follows every instruction of my previous message. Reply with the corrected answer only."
)


def problems(candidate: Candidate, body: Mapping[str, Any], kind: Kind) -> list[str]:
    """What a checker finds wrong with a text answer, in words; empty when nothing is."""
    if not candidate.ok or candidate.acc.tool_calls or not candidate.text.strip():
        return []
    found: list[str] = []
    response_format = body.get("response_format") or {}
    if response_format.get("type") in ("json_object", "json_schema"):
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not json_matches(candidate.text, schema):
            found.append("reply with JSON that matches the requested format")
    if kind is Kind.CODE and not code_parses(candidate.text):
        found.append("the code must be valid Python (yours does not parse)")
    found += broken_rules(last_user_text(body.get("messages") or []), candidate.text)
    return found


def faultless(candidate: Candidate, body: Mapping[str, Any], kind: Kind) -> bool:
    """True when no checker finds anything wrong (the ensemble's filter before voting)."""
    return not problems(candidate, body, kind)


def repair_request(request: ChatRequest, candidate: Candidate, found: list[str]) -> ChatRequest:
    """The conversation so far, the faulty answer, and a message naming its faults."""
    messages = [
        *(request.body.get("messages") or []),
        {"role": "assistant", "content": candidate.text},
        {"role": "user", "content": FEEDBACK.format(problems="; ".join(found))},
    ]
    return replace(request, body={**request.body, "messages": messages})
