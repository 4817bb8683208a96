"""One verdict per answer, from every checker that applies to the request.

The cascade accepts or escalates on it, the repair step names its faults back to the member,
and the ensemble drops faulted candidates before voting: all three read the same
:class:`Verdict`, so a checker added here counts everywhere at once. A :class:`Checker` reads
the request once and then judges any number of answers to it.

Checkers, in order: tool-call arguments against the tools' schemas (when the answer calls a
tool), JSON against the requested ``response_format``, Python that parses (for code
requests), and the prompt's checkable instructions (:mod:`ensemble.instructions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ensemble.candidates import Candidate
from ensemble.classify import Kind, last_user_text
from ensemble.instructions import Check, instruction_checks
from ensemble.shape import grammar, merged
from ensemble.signals import code_parses, json_matches, tool_calls_valid

_BAD_TOOL_CALL = "the tool-call arguments must match the tool's parameters"
_BAD_JSON = "reply with JSON that matches the requested format"
_BAD_CODE = "the code must be valid Python (yours does not parse)"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Which checkers applied, what they found (in words), and which one decided."""

    checks: tuple[str, ...] = ()
    faults: tuple[str, ...] = ()
    decided_by: str = ""
    repairable: bool = True

    @property
    def checked(self) -> bool:
        return bool(self.checks)

    @property
    def passed(self) -> bool:
        return not self.faults


@dataclass(frozen=True, slots=True)
class Checker:
    """The checkers that apply to one request, read from it once (a prompt can be megabytes,
    and a cascade or an ensemble judges several answers to it)."""

    tools: Sequence[Any] = ()
    json: bool = False
    schema: Any = None
    code: bool = False
    instructions: tuple[Check, ...] = ()

    @property
    def judges_form(self) -> bool:
        """True when some checker can judge an answer's form (so no other signal is needed)."""
        return bool(self.tools or self.json or self.code or self.instructions)

    @property
    def grammar(self) -> str | None:
        """A GBNF grammar that makes every instruction hold, when the request's checks are all
        instructions of form (word counts, lines, case, letters, start, commas) that agree."""
        if self.tools or self.json or self.code or not self.instructions:
            return None
        shapes = [check.shape for check in self.instructions]
        if any(shape is None for shape in shapes):
            return None
        shape = merged([s for s in shapes if s is not None])
        return None if shape is None else grammar(shape)

    @classmethod
    def of(cls, body: Mapping[str, Any], kind: Kind) -> Checker:
        response_format = body.get("response_format") or {}
        return cls(
            tools=body.get("tools") or (),
            json=response_format.get("type") in ("json_object", "json_schema"),
            schema=(response_format.get("json_schema") or {}).get("schema"),
            code=kind is Kind.CODE,
            instructions=tuple(instruction_checks(last_user_text(body.get("messages") or []))),
        )

    def verdict(self, candidate: Candidate) -> Verdict:
        """Every applicable checker's finding on ``candidate`` (no checks for a failed call)."""
        if not candidate.ok:
            return Verdict()
        calls = candidate.acc.calls()
        if self.tools and calls:
            faults = () if tool_calls_valid(calls, self.tools) else (_BAD_TOOL_CALL,)
            return Verdict(("tool_arguments_valid",), faults, "tool_arguments_valid", False)
        text = candidate.text
        found: list[tuple[str, list[str]]] = []
        if self.json:
            found.append(("json_valid", [] if json_matches(text, self.schema) else [_BAD_JSON]))
        if self.code:
            found.append(("code_parses", [] if code_parses(text) else [_BAD_CODE]))
        if self.instructions:
            broken = [c.broken(text) for c in self.instructions if not c.test(text)]
            found.append(("instructions", broken))
        return _summed(found, repairable=bool(text.strip()) and not calls)

    def tidied(self, text: str) -> str | None:
        """``text`` with every broken instruction's tidy applied, when that leaves fewer
        instructions broken (and changes nothing a model would have to rewrite)."""
        broken = [c for c in self.instructions if not c.test(text)]
        fixes = [c.tidy for c in broken if c.tidy is not None]
        if not fixes:
            return None
        for fix in fixes:
            text = fix(text)
        left = sum(not c.test(text) for c in self.instructions)
        return text if left < len(broken) else None

    def tidy(self, candidate: Candidate) -> Candidate:
        """The candidate, with its text tidied when that fixes a broken instruction."""
        tidy = (
            self.tidied(candidate.text) if candidate.ok and not candidate.acc.tool_calls else None
        )
        return candidate if tidy is None else candidate.retexted(tidy, tidied=True)

    def faultless(self, candidate: Candidate) -> bool:
        """True when no checker finds anything wrong (the ensemble's filter before voting)."""
        return self.verdict(candidate).passed


def _summed(found: Sequence[tuple[str, list[str]]], *, repairable: bool) -> Verdict:
    """Collect ``(check, its faults)`` pairs; the first check with a fault decides, else the
    first check."""
    faults = [fault for _, some in found for fault in some]
    decided = next((name for name, some in found if some), found[0][0] if found else "")
    names = tuple(name for name, _ in found)
    return Verdict(names, tuple(dict.fromkeys(faults)), decided, repairable)
