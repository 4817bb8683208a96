"""Judging one answer against one item's check: a pure function per kind.

``score(item, answer)`` dispatches on the check. Extraction is deliberately forgiving about
presentation (prose around a number, code in a fence or bare, a capitalised fact) and strict
about substance (the number, the tests, the alias, the format). Code is the one impure step:
it runs in :mod:`evals.sandbox`, and only after it parses.
"""

from __future__ import annotations

import ast
import math
import re
import unicodedata
from dataclasses import dataclass

from evals.items import Check, CodeCheck, FormatCheck, Item, MatchCheck, NumberCheck
from evals.sandbox import run_tests

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(?:def |class |import |from |@)", re.M)
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ARTICLES = {"a", "an", "the"}
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_DEFINITIONS = (
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Import,
    ast.ImportFrom,
    ast.Assign,
    ast.AnnAssign,
)


@dataclass(frozen=True, slots=True)
class Score:
    """Whether the answer is right, and a short reason either way."""

    correct: bool
    detail: str


def _parses(code: str) -> bool:
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return True


def _bare_code(answer: str) -> str:
    """Code written without a fence: from the first code-looking line, minus trailing prose."""
    if _parses(answer):
        return answer
    start = _CODE_START.search(answer)
    lines = answer[start.start() :].splitlines() if start else answer.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end]).rstrip()
        if _parses(candidate):
            return candidate
    return "\n".join(lines)


def extract_code(answer: str, entry: str = "") -> str:
    """The code in an answer: the fenced Python block defining ``entry``, all blocks, or bare.

    An unterminated fence (an answer cut off by ``max_tokens``) still counts as a block.
    """
    blocks = [b.strip("\n") for tag, b in _FENCE.findall(answer) if tag.lower() in _PYTHON_TAGS]
    if not blocks:
        return _bare_code(answer)
    defining = [b for b in blocks if entry and re.search(rf"^\s*def {re.escape(entry)}\(", b, re.M)]
    return defining[0] if defining else "\n\n".join(blocks)


def definitions(code: str) -> str:
    """Only the top-level definitions of parseable ``code``: functions, classes, imports and
    assignments. Example calls, prints, asserts and ``__main__`` blocks are dropped, so what is
    judged is the function asked for, not the demo the model wrote around it."""
    module = ast.parse(code)
    module.body = [node for node in module.body if isinstance(node, _DEFINITIONS)]
    return ast.unparse(module)


def extract_number(answer: str) -> float | None:
    """The answer's number: the last ``\\boxed{...}`` one if any (the LaTeX convention for a
    final answer, which prose may follow), else the last number written; ``1,200`` is 1200."""
    boxed = [n for body in _BOXED.findall(answer) for n in _NUMBER.findall(body)]
    found = boxed or _NUMBER.findall(answer)
    return float(found[-1].replace(",", "")) if found else None


def normalise(text: str) -> str:
    """Lowercase ASCII words separated by single spaces, without accents or articles."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
    words = re.sub(r"[^a-z0-9]+", " ", ascii_text).split()
    return " ".join(w for w in words if w not in _ARTICLES)


def score_code(answer: str, check: CodeCheck) -> Score:
    code = extract_code(answer, check.entry)
    if not code.strip():
        return Score(False, "no code")
    if not _parses(code):
        return Score(False, "code does not parse")
    code = definitions(code)
    if not re.search(rf"\bdef {re.escape(check.entry)}\(", code):
        return Score(False, f"no function `{check.entry}`")
    outcome = run_tests(code, check.tests, check.timeout)
    return Score(outcome.passed, outcome.detail)


def score_number(answer: str, check: NumberCheck) -> Score:
    value = extract_number(answer)
    if value is None:
        return Score(False, "no number")
    ok = math.isclose(value, check.answer, rel_tol=0.0, abs_tol=check.tol)
    return Score(ok, f"got {value:g}, expected {check.answer:g}")


def score_match(answer: str, check: MatchCheck) -> Score:
    said = f" {normalise(answer)} "
    for alias in check.answers:
        wanted = normalise(alias)
        if wanted and f" {wanted} " in said:
            return Score(True, f"found {alias!r}")
    return Score(False, f"none of {list(check.answers)}")


def score_format(answer: str, check: FormatCheck) -> Score:
    problems = [p for rule in check.rules if (p := rule.problem(answer)) is not None]
    return Score(not problems, "; ".join(problems) or "format ok")


def score_check(check: Check, answer: str) -> Score:
    """Judge ``answer`` by ``check``."""
    if isinstance(check, CodeCheck):
        return score_code(answer, check)
    if isinstance(check, NumberCheck):
        return score_number(answer, check)
    if isinstance(check, MatchCheck):
        return score_match(answer, check)
    return score_format(answer, check)


def score(item: Item, answer: str) -> Score:
    """Judge ``answer`` to ``item``."""
    return score_check(item.check, answer)
