"""Format rules for instruction-following items: each a small struct that checks an answer.

A rule is one object in a format item's ``rules`` list, tagged by ``rule``::

    {"rule": "words", "min": 5, "max": 5}

``problem(answer)`` returns ``None`` when the answer obeys the rule, else a short reason. The
answer is stripped of surrounding whitespace first; nothing else is forgiven except where a
rule says so (JSON may sit in one fenced block, since models fence it by habit).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import msgspec

JsonType = Literal["str", "int", "number", "bool", "list", "object"]
_BULLET = r"[-*\u2022+]"
_NUMBERED = r"\d+[.)]"
_FENCED = re.compile(r"^```[\w+-]*\s*\n(.*?)\n?```$", re.S)
_WORD = re.compile(r"\w")


def _json_type_ok(value: Any, expected: JsonType) -> bool:
    if expected == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    kinds: dict[str, type | tuple[type, ...]] = {
        "str": str,
        "bool": bool,
        "list": list,
        "object": dict,
    }
    return isinstance(value, kinds[expected])


def parse_json_answer(answer: str) -> Any:
    """The JSON value of the whole answer, or of its one fenced block; raises ValueError."""
    text = answer.strip()
    fenced = _FENCED.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def count_words(answer: str) -> int:
    """Whitespace-separated tokens that hold at least one letter or digit."""
    return sum(1 for token in answer.split() if _WORD.search(token))


class _Rule(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="rule"):
    def problem(self, answer: str) -> str | None:
        raise NotImplementedError


class JsonObject(_Rule, frozen=True, tag="json"):
    """The answer is a JSON object with ``keys`` of the given types (and no others if exact)."""

    keys: dict[str, JsonType]
    exact: bool = True

    def problem(self, answer: str) -> str | None:
        try:
            value = parse_json_answer(answer)
        except ValueError:
            return "not JSON"
        if not isinstance(value, dict):
            return "not a JSON object"
        missing = [k for k in self.keys if k not in value]
        if missing:
            return f"missing keys {missing}"
        if self.exact and set(value) != set(self.keys):
            return f"unexpected keys {sorted(set(value) - set(self.keys))}"
        wrong = [k for k, t in self.keys.items() if not _json_type_ok(value[k], t)]
        return f"wrong types for {wrong}" if wrong else None


class JsonList(_Rule, frozen=True, tag="json_list"):
    """The answer is a JSON array of exactly ``n`` values of type ``item``."""

    n: int
    item: JsonType = "str"

    def problem(self, answer: str) -> str | None:
        try:
            value = parse_json_answer(answer)
        except ValueError:
            return "not JSON"
        if not isinstance(value, list):
            return "not a JSON array"
        if len(value) != self.n:
            return f"{len(value)} items, wanted {self.n}"
        ok = all(_json_type_ok(v, self.item) for v in value)
        return None if ok else f"items are not all {self.item}"


class Words(_Rule, frozen=True, tag="words"):
    """Between ``min`` and ``max`` words (see :func:`count_words`)."""

    min: int = 1
    max: int | None = None

    def problem(self, answer: str) -> str | None:
        n = count_words(answer)
        if n < self.min or (self.max is not None and n > self.max):
            return f"{n} words"
        return None


class ListItems(_Rule, frozen=True, tag="list_items"):
    """Exactly ``n`` list lines (bullets, numbers or either); ``only``: no other lines."""

    n: int
    style: Literal["bullet", "numbered", "any"] = "any"
    only: bool = False

    def problem(self, answer: str) -> str | None:
        marker = {"bullet": _BULLET, "numbered": _NUMBERED}.get(
            self.style, f"(?:{_BULLET}|{_NUMBERED})"
        )
        item = re.compile(rf"^\s*{marker}\s+\S")
        lines = [line for line in answer.strip().splitlines() if line.strip()]
        items = sum(1 for line in lines if item.match(line))
        if items != self.n:
            return f"{items} list items, wanted {self.n}"
        if self.only and items != len(lines):
            return "text besides the list"
        return None


class Case(_Rule, frozen=True, tag="case"):
    """Every letter is lowercase (``lower``) or uppercase (``upper``); at least one letter."""

    case: Literal["lower", "upper"]

    def problem(self, answer: str) -> str | None:
        letters = [c for c in answer if c.isalpha()]
        if not letters:
            return "no letters"
        ok = all(c.islower() if self.case == "lower" else c.isupper() for c in letters)
        return None if ok else f"not all {self.case}case"


class StartsWith(_Rule, frozen=True, tag="starts_with"):
    """The answer begins with ``prefix``."""

    prefix: str
    ignore_case: bool = True

    def problem(self, answer: str) -> str | None:
        text, prefix = answer.strip(), self.prefix
        if self.ignore_case:
            text, prefix = text.lower(), prefix.lower()
        return None if text.startswith(prefix) else "wrong start"


class EndsWith(_Rule, frozen=True, tag="ends_with"):
    """The answer ends with ``suffix``."""

    suffix: str
    ignore_case: bool = True

    def problem(self, answer: str) -> str | None:
        text, suffix = answer.strip(), self.suffix
        if self.ignore_case:
            text, suffix = text.lower(), suffix.lower()
        return None if text.endswith(suffix) else "wrong end"


class Contains(_Rule, frozen=True, tag="contains"):
    """``text`` occurs (case-insensitively) between ``min`` and ``max`` times; max 0 forbids it."""

    text: str
    min: int = 1
    max: int | None = None

    def problem(self, answer: str) -> str | None:
        n = answer.lower().count(self.text.lower())
        if n < self.min or (self.max is not None and n > self.max):
            return f"{self.text!r} occurs {n} times"
        return None


class Regex(_Rule, frozen=True, tag="regex"):
    """The whole stripped answer matches ``pattern`` (``.`` matches newlines)."""

    pattern: str

    def problem(self, answer: str) -> str | None:
        return None if re.fullmatch(self.pattern, answer.strip(), re.S) else "pattern mismatch"


class Choice(_Rule, frozen=True, tag="choice"):
    """The answer is exactly one of ``options`` (case and surrounding punctuation ignored)."""

    options: tuple[str, ...]

    def problem(self, answer: str) -> str | None:
        text = answer.strip().strip(".!\"'`*").strip().lower()
        return None if text in {o.lower() for o in self.options} else "not one of the options"


class Csv(_Rule, frozen=True, tag="csv"):
    """One line of exactly ``n`` non-empty comma-separated items."""

    n: int

    def problem(self, answer: str) -> str | None:
        text = answer.strip()
        if "\n" in text:
            return "more than one line"
        parts = [p.strip() for p in text.rstrip(".").split(",")]
        if any(not p for p in parts):
            return "empty item"
        return None if len(parts) == self.n else f"{len(parts)} items, wanted {self.n}"


class Lines(_Rule, frozen=True, tag="lines"):
    """Exactly ``n`` non-empty lines."""

    n: int

    def problem(self, answer: str) -> str | None:
        n = sum(1 for line in answer.strip().splitlines() if line.strip())
        return None if n == self.n else f"{n} lines, wanted {self.n}"


Rule = (
    JsonObject
    | JsonList
    | Words
    | ListItems
    | Case
    | StartsWith
    | EndsWith
    | Contains
    | Regex
    | Choice
    | Csv
    | Lines
)
