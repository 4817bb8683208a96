"""Cheap signals about an answer: is it valid, what is its short form, how alike are two.

All pure functions over text. They drive cascade escalation (validity, agreement) and
ensemble combination (votes over short forms, agreement between free-text candidates).
"""

from __future__ import annotations

import ast
import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from backends.toolcalls import Call, tools_of
from backends.toolcalls_schema import call_errors

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+|/\d+)?")
_WORD = re.compile(r"\w+")
_SHORT_WORDS = 6


def extract_code(text: str) -> str:
    """The Python code of an answer: its fenced blocks (python first), else the whole text."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text)]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3", "")]
    if python:
        return "\n".join(python)
    return blocks[0][1] if blocks else text


def code_parses(text: str) -> bool:
    """True when the answer holds Python that parses and defines or does something."""
    code = extract_code(text).strip()
    if not code:
        return False
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return False
    return bool(tree.body)


def parse_json(text: str) -> Any:
    """The JSON value of an answer (a fenced block or the outermost braces), or None."""
    candidates = [body for _, body in _FENCE.findall(text)] + [text]
    for candidate in candidates:
        start = min((i for i in (candidate.find("{"), candidate.find("[")) if i >= 0), default=-1)
        if start < 0:
            continue
        end = max(candidate.rfind("}"), candidate.rfind("]"))
        try:
            return json.loads(candidate[start : end + 1])
        except (ValueError, RecursionError):
            continue
    return None


def json_matches(text: str, schema: Any) -> bool:
    """The answer parses as JSON and has the schema's required keys of the right types.

    The schema comes from the request: a part that is not what JSON Schema says it is (a
    property that is not an object, ``required`` that is not a list) constrains nothing."""
    value = parse_json(text)
    if value is None:
        return False
    if not schema:
        return True
    try:
        return _matches(value, schema)
    except RecursionError:
        return False


_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


def _matches(value: Any, schema: Any) -> bool:
    if not isinstance(schema, Mapping):
        return True
    expected = _TYPES.get(str(schema.get("type", "")))
    if expected is not None and not isinstance(value, expected):
        return False
    if isinstance(value, dict):
        properties = _of(schema, "properties", Mapping, {})
        if any(
            key not in value for key in _of(schema, "required", list, []) if isinstance(key, str)
        ):
            return False
        return all(_matches(value[k], properties[k]) for k in value if k in properties)
    return True


def _of(schema: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = schema.get(key)
    return value if isinstance(value, kind) else default


def tool_calls_valid(tool_calls: Sequence[Mapping[str, Any]], tools: Sequence[Any]) -> bool:
    """Every tool call names an offered tool and its arguments validate against that tool's
    JSON Schema (the same check the node client makes: :mod:`backends.toolcalls_schema`)."""
    offered = tools_of({"tools": list(tools)})
    calls = [_call(c) for c in tool_calls]
    return bool(calls) and all(c is not None and not call_errors(c, offered) for c in calls)


def _call(entry: Mapping[str, Any]) -> Call | None:
    function = entry.get("function")
    if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
        return None
    arguments = function.get("arguments")
    return Call(function["name"], arguments if isinstance(arguments, str) else "")


def confidence(logprobs: Sequence[Any]) -> float | None:
    """The answer's mean token probability (the geometric mean: ``exp`` of the mean log-prob),
    or None when there are no log-probs to judge by."""
    values = [
        entry["logprob"]
        for entry in logprobs
        if isinstance(entry, Mapping) and isinstance(entry.get("logprob"), int | float)
    ]
    if not values:
        return None
    return math.exp(max(sum(values) / len(values), -700.0))


def final_number(text: str) -> str | None:
    """The last number in the answer, normalised ("1,200.0" -> "1200")."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    raw = str(found[-1]).replace(",", "")
    if "/" in raw:
        return raw
    value = float(raw)
    return str(int(value)) if value.is_integer() else repr(value)


def short_form(text: str) -> str | None:
    """A vote key for short answers: the final number, or the few words of a short answer."""
    number = final_number(text)
    if number is not None:
        return number
    words = _WORD.findall(text.lower())
    if 0 < len(words) <= _SHORT_WORDS:
        return " ".join(words)
    return None


def similarity(a: str, b: str) -> float:
    """Word-bigram Jaccard similarity in [0, 1]; identical texts score 1."""
    sa, sb = _bigrams(a), _bigrams(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def _bigrams(text: str) -> set[tuple[str, str]]:
    words = _WORD.findall(text.lower())
    if len(words) < 2:
        return {(w, "") for w in words}
    return set(itertools.pairwise(words))
