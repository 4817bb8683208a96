"""Checkable instructions in a prompt, and whether an answer obeys them.

Many requests state a format a program can verify: "exactly five words", "as JSON", "all
lowercase", "a numbered list of 4 steps", "answer yes or no", "start with 'Answer:'". These
checks find such instructions in the user's message and test an answer against them, which
gives the cascade a cheap, reliable signal for structured requests. Unrecognised instructions
produce no check (the answer is not judged on them).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from ensemble.signals import parse_json

_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1,
}  # fmt: skip
_N = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|single)"
_WORDS = re.compile(r"[A-Za-z0-9']+")
_LIST_LINE = re.compile(r"^[^\S\n]*(?:[-*\u2022]|\d+[.)])\s+\S", re.MULTILINE)
_CSV = re.compile(r"comma-separated", re.I)
_COUNTED = re.compile(rf"\b{_N} \w+", re.I)
_COUNT = re.compile(rf"\b{_N}\b", re.I)


def _n(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


@dataclass(frozen=True, slots=True)
class Check:
    """One instruction: its name and a test of an answer."""

    name: str
    test: Callable[[str], bool]


def _word_count(text: str) -> int:
    return len(_WORDS.findall(text))


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


def _words(test: Callable[[int], bool]) -> Callable[[str], bool]:
    return lambda text: test(_word_count(text))


def _list_items(n: int) -> Callable[[str], bool]:
    return lambda text: len(_LIST_LINE.findall(text)) == n


def _csv_items(n: int) -> Callable[[str], bool]:
    return lambda text: len([p for p in text.strip().split(",") if p.strip()]) == n


def _json_checks(prompt: str) -> list[Check]:
    lowered = prompt.lower()
    if "json array" in lowered:
        return [Check("json_array", lambda t: isinstance(parse_json(t), list))]
    if "json" in lowered:
        return [Check("json", lambda t: parse_json(t) is not None)]
    return []


def _count_checks(prompt: str) -> list[Check]:
    checks: list[Check] = []
    for match in re.finditer(rf"\bexactly {_N} words?\b|\bin {_N} words\b", prompt, re.I):
        n = _n(match.group(1) or match.group(2))
        checks.append(Check(f"words=={n}", _words(n.__eq__)))
    for match in re.finditer(rf"\b{_N}-word\b", prompt, re.I):
        n = _n(match.group(1))
        checks.append(Check(f"words=={n}", _words(n.__eq__)))
    for match in re.finditer(r"\b(?:fewer|less) than (\d+) words\b", prompt, re.I):
        n = int(match.group(1))
        checks.append(Check(f"words<{n}", _words(n.__gt__)))
    for match in re.finditer(r"\bat most (\d+) words\b", prompt, re.I):
        n = int(match.group(1))
        checks.append(Check(f"words<={n}", _words(n.__ge__)))
    return checks


def _list_checks(prompt: str) -> list[Check]:
    lowered = prompt.lower()
    if not re.search(r"\b(?:numbered|bulleted) list\b|\bbullet\b", lowered):
        return []
    match = re.search(rf"\bexactly {_N}\b|\blist of (?:exactly )?{_N}\b|^\w+ {_N}\b", lowered)
    if match is None:
        match = re.search(rf"\b{_N} (?:\w+ )?(?:items|steps|tips|fruits|vegetables)\b", lowered)
    if match is None:
        return []
    n = _n(next(g for g in match.groups() if g))
    return [Check(f"list_items=={n}", _list_items(n))]


def _csv_checks(prompt: str) -> list[Check]:
    """A count stated on one line: "5 fruits, comma-separated" or "comma-separated ... 5".
    Read line by line in linear time (a prompt is untrusted; one regex with two ``.*`` was
    quadratic)."""
    for line in prompt.split("\n"):
        word = _csv_count(line)
        if word is not None:
            n = _n(word)
            return [Check(f"csv=={n}", _csv_items(n))]
    return []


def _csv_count(line: str) -> str | None:
    """The count of the leftmost of: a number and a word before the last "comma-separated",
    or the last number after the first one."""
    marks = list(_CSV.finditer(line))
    if not marks:
        return None
    before = _COUNTED.search(line, 0, marks[-1].start())
    counts = list(_COUNT.finditer(line, marks[0].end()))
    after = counts[-1] if counts else None
    if before is not None and (after is None or before.start() < marks[0].start()):
        return before.group(1)
    return after.group(1) if after is not None else None


def _case_checks(prompt: str) -> list[Check]:
    lowered = prompt.lower()
    checks = []
    if re.search(r"\b(?:all |only |entirely in )?lowercase\b", lowered):
        checks.append(Check("lowercase", lambda t: _letters(t) == _letters(t).lower()))
    if re.search(r"\ball capital letters\b|\ball caps\b|\buppercase\b", lowered):
        checks.append(Check("uppercase", lambda t: _letters(t) == _letters(t).upper()))
    return checks


def _answer_checks(prompt: str) -> list[Check]:
    checks = []
    choice = re.search(r"\banswer with only (\w+) or (\w+)\b", prompt, re.I)
    if choice:
        options = {choice.group(1).lower(), choice.group(2).lower()}
        checks.append(Check("choice", lambda t: " ".join(_WORDS.findall(t.lower())) in options))
    if re.search(r"\b(?:reply|answer) with a single word\b", prompt, re.I):
        checks.append(Check("one_word", lambda t: _word_count(t) == 1))
    start = re.search(
        r"\bstart (?:your (?:answer|reply) )?with (?:the word )?'([^']+)'", prompt, re.I
    )
    if start:
        prefix = start.group(1)
        checks.append(Check("starts_with", lambda t: t.strip().startswith(prefix)))
    end = re.search(r"\bend your (?:reply|answer) with the exact phrase '([^']+)'", prompt, re.I)
    if end:
        suffix = end.group(1)
        checks.append(Check("ends_with", lambda t: t.strip().endswith(suffix)))
    if re.search(r"\bwithout using any commas\b", prompt, re.I):
        checks.append(Check("no_commas", lambda t: "," not in t))
    return checks


def instruction_checks(prompt: str) -> list[Check]:
    """Every checkable instruction found in ``prompt``."""
    return [
        *_json_checks(prompt),
        *_count_checks(prompt),
        *_list_checks(prompt),
        *_csv_checks(prompt),
        *_case_checks(prompt),
        *_answer_checks(prompt),
    ]


def failed_checks(prompt: str, answer: str) -> list[str] | None:
    """Names of the instructions the answer breaks; None when the prompt has none."""
    checks = instruction_checks(prompt)
    if not checks:
        return None
    return [c.name for c in checks if not c.test(answer)]
