"""Judging one answer against one item's check: a pure function per kind.

``score(item, answer, calls)`` dispatches on the check. Extraction is deliberately forgiving
about presentation (prose around a number, code in a fence or bare, a capitalised fact, tool
calls in any order) and strict about substance (the number, the tests, the alias, the format,
the tool, arguments valid under its JSON Schema and carrying the values asked for). Code is
the one impure step: it runs in :mod:`evals.sandbox`, and only after it parses.
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from evals.cache import ToolCall
from evals.items import CodeCheck, FormatCheck, Item, MatchCheck, NumberCheck, TextCheck
from evals.sandbox import run_tests
from evals.tools import Arg, Exact, ExpectedCall, Number, OneOf, Text, Tool, ToolCheck, first_error

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = {"", "python", "py", "python3"}
_CODE_START = re.compile(r"^(?:def |class |import |from |@)", re.M)
_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_ARTICLES = {"a", "an", "the"}
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MISSING = object()
Made = tuple[str, dict[str, Any]]
"""A tool call whose arguments parsed and validated: the tool's name and the arguments."""
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


def score_check(check: TextCheck, answer: str) -> Score:
    """Judge ``answer`` by ``check``."""
    if isinstance(check, CodeCheck):
        return score_code(answer, check)
    if isinstance(check, NumberCheck):
        return score_number(answer, check)
    if isinstance(check, MatchCheck):
        return score_match(answer, check)
    return score_format(answer, check)


def score(item: Item, answer: str, calls: Sequence[ToolCall] = ()) -> Score:
    """Judge ``answer`` (its text, and the tool ``calls`` it made) to ``item``."""
    if isinstance(item.check, ToolCheck):
        return score_tool(answer, calls, item.check, item.tools)
    return score_check(item.check, answer)


def score_tool(
    answer: str, calls: Sequence[ToolCall], check: ToolCheck, tools: Sequence[Tool]
) -> Score:
    """Right when the calls are valid and match the check's (in any order), or, where no call
    is expected, when there is none and the text mentions an answer."""
    if not check.calls:
        if calls:
            return Score(False, f"called {', '.join(c.name for c in calls)}; expected no call")
        return score_match(answer, MatchCheck(check.answers))
    if not calls:
        return Score(False, "no tool call")
    schemas = {tool.function.name: tool.function.parameters for tool in tools}
    made: list[Made] = []
    for call in calls:
        arguments, problem = parse_call(call, schemas)
        if arguments is None:
            return Score(False, problem)
        made.append((call.name, arguments))
    if len(made) != check.count:
        noun = "call" if len(made) == 1 else "calls"
        return Score(False, f"{len(made)} {noun}, expected {check.count}")
    return _matched(made, check.calls)


def parse_call(
    call: ToolCall, schemas: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any] | None, str]:
    """The call's arguments, when it names an offered tool and they are a JSON object its
    schema accepts (empty text counts as ``{}``); else None and what is wrong."""
    if call.name not in schemas:
        return None, f"called {call.name!r}, which is not offered"
    try:
        value = json.loads(call.arguments or "{}", parse_constant=_no_constant)
    except ValueError:
        return None, f"{call.name}: arguments are not valid JSON"
    if not isinstance(value, dict):
        return None, f"{call.name}: arguments are not a JSON object"
    error = first_error(schemas[call.name], value)
    return (None, f"{call.name}: {error}") if error else (value, "")


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _matched(made: Sequence[Made], expected: Sequence[ExpectedCall]) -> Score:
    """Each call paired with a different acceptable one (tried in every order)."""
    problems = [[mismatch(call, want) for want in expected] for call in made]
    for order in itertools.permutations(range(len(expected)), len(made)):
        if all(problems[i][j] is None for i, j in enumerate(order)):
            return Score(True, f"called {', '.join(name for name, _ in made)}")
    for (name, _), row in zip(made, problems, strict=True):
        if all(row):
            same_tool = [p for p, want in zip(row, expected, strict=True) if want.name == name]
            return Score(False, str((same_tool or row)[0]))
    return Score(False, "the calls do not cover every expected call")


def mismatch(call: Made, expected: ExpectedCall) -> str | None:
    """Why ``call`` is not ``expected`` (another tool, an argument missing or off), or None."""
    name, arguments = call
    if name != expected.name:
        return f"called {name}, expected {expected.name}"
    for path, arg in expected.arguments.items():
        value = _lookup(arguments, path)
        problem = "missing" if value is _MISSING else arg_problem(arg, value)
        if problem:
            return f"{name}.{path}: {problem}"
    return None


def _lookup(arguments: Any, path: str) -> Any:
    here = arguments
    for part in path.split("."):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.isdigit() and int(part) < len(here):
            here = here[int(part)]
        else:
            return _MISSING
    return here


def arg_problem(arg: Arg, value: Any) -> str | None:
    """Why ``value`` does not meet ``arg``, or None."""
    shown = json.dumps(value)
    if isinstance(arg, Exact):
        return None if same(value, arg.value) else f"{shown}, expected {json.dumps(arg.value)}"
    if isinstance(arg, OneOf):
        ok = any(same(value, v) for v in arg.values)
        return None if ok else f"{shown}, expected one of {json.dumps(arg.values)}"
    if isinstance(arg, Number):
        if not isinstance(value, int | float) or isinstance(value, bool):
            return f"{shown} is not a number"
        ok = math.isclose(value, arg.value, rel_tol=0.0, abs_tol=arg.tol)
        return None if ok else f"{shown}, expected {arg.value:g} (within {arg.tol:g})"
    if isinstance(arg, Text):
        if not isinstance(value, str):
            return f"{shown} is not a string"
        ok = score_match(value, MatchCheck(arg.aliases)).correct
        return None if ok else f"{shown} does not mention {' or '.join(arg.aliases)}"
    return None


def same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value (``3 == 3.0``) but booleans are not numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
