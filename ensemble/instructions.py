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
from typing import Literal

from ensemble.shape import Shape
from ensemble.signals import parse_json

_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "single": 1,
}  # fmt: skip
_N = r"(\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|single)"
_WORDS = re.compile(r"[A-Za-z0-9']+")
_LIST_LINE = re.compile(r"^[^\S\n]*(?:[-*\u2022]|\d+[.)])\s+\S", re.MULTILINE)
_MARKER = re.compile(r"^[^\S\n]*(?:[-*\u2022]|\d+[.)])[^\S\n]+(?=\S)", re.MULTILINE)
_NO_MARKERS = re.compile(
    r"\b(?:no|without) (?:numbers?,? (?:or )?)?(?:bullets?|bullet points|numbering|list markers)\b",
    re.I,
)
_FENCE_LINE = re.compile(r"^\s*```")
_CSV = re.compile(r"comma-separated|separated by commas", re.I)
_LINES = re.compile(rf"\b(?:write|exactly|in) {_N} lines\b", re.I)
_PER_LINE = re.compile(rf"\b{_N} (?:[\w-]+ ){{0,2}}[\w-]+, one per line\b", re.I)
_WORD_TIMES = re.compile(rf"\bthe word '([^']+)' exactly (once|twice|thrice|{_N} times?)\b", re.I)
_NO_LETTER = re.compile(
    r"\b(?:without (?:using )?|(?:do not|don't|never) use )the letter '(\w)'", re.I
)
_JSON_ASKED = re.compile(
    r"\bjson (array|object|list)\b|\b(?:as|in|only|valid|return|output|respond with) (json)\b", re.I
)
_NO_FENCE = re.compile(r"\bwithout (?:a |any )?code (?:block|fence)s?\b|\bno code blocks?\b", re.I)
_COUNTED = re.compile(rf"\b{_N} \w+", re.I)
_COUNT = re.compile(rf"\b{_N}\b", re.I)
_RANGE = re.compile(rf"\b{_N} (?:to|through) {_N}\b", re.I)
_EXACT_WORDS = re.compile(rf"\bexactly {_N} words?\b|\bin {_N} words\b", re.I)
_N_WORD = re.compile(rf"\b{_N}-word\b", re.I)
_FEWER_WORDS = re.compile(r"\b(?:fewer|less) than (\d+) words\b", re.I)
_AT_MOST_WORDS = re.compile(r"\bat most (\d+) words\b", re.I)
_LIST_ASKED = re.compile(r"\b(?:numbered|bulleted) list\b|\bbullet\b")
_LIST_COUNT = re.compile(rf"\bexactly {_N}\b|\blist of (?:exactly )?{_N}\b|^\w+ {_N}\b")
# When a list is asked, its size is the number before a plural noun ("three reasons", "5
# short tips"), with at most one word between.
_LIST_ITEMS = re.compile(rf"\b{_N} (?:[a-z-]+ )?[a-z]{{2,}}s\b")
_LOWER_ASKED = re.compile(r"\b(?:all |only |entirely in )?lowercase\b")
_UPPER_ASKED = re.compile(r"\ball capital letters\b|\ball caps\b|\buppercase\b")
_CHOICE = re.compile(r"\banswer with only (\w+) or (\w+)\b", re.I)
_ONE_WORD = re.compile(r"\b(?:reply|answer) with a single word\b", re.I)
_STARTS_WITH = re.compile(r"\bstart (?:your (?:answer|reply) )?with (?:the word )?'([^']+)'", re.I)
_ENDS_WITH = re.compile(r"\bend your (?:reply|answer) with the exact phrase '([^']+)'", re.I)
_NO_COMMAS = re.compile(r"\bwithout using any commas\b", re.I)


def _n(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


@dataclass(frozen=True, slots=True)
class Check:
    """One instruction: its name, a test of an answer, and the rule in words.

    ``rule`` and ``measure`` tell a model what it got wrong (the cascade's repair step):
    "use exactly 8 words" and, for an answer, "it has 9". ``shape`` is the same instruction as
    a grammar can enforce it (:mod:`ensemble.shape`), when one can. ``tidy`` fixes an answer
    that breaks it without changing what it says (lowercasing it, unwrapping a code fence),
    when that is possible.
    """

    name: str
    test: Callable[[str], bool]
    rule: str = ""
    measure: Callable[[str], str] | None = None
    shape: Shape | None = None
    tidy: Callable[[str], str] | None = None

    def broken(self, answer: str) -> str:
        """The rule in words, with what the answer did when that can be counted."""
        rule = self.rule or self.name
        return f"{rule} (yours: {self.measure(answer)})" if self.measure else rule


def _word_count(text: str) -> int:
    return len(_WORDS.findall(text))


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


def _lines(text: str) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()]


def _words(test: Callable[[int], bool]) -> Callable[[str], bool]:
    return lambda text: test(_word_count(text))


def _word_check(
    name: str, test: Callable[[int], bool], rule: str, shape: Shape | None = None
) -> Check:
    return Check(name, _words(test), rule, lambda t: f"{_word_count(t)} words", shape)


def _list_items(n: int) -> Callable[[str], bool]:
    return lambda text: len(_LIST_LINE.findall(text)) == n


def _csv_parts(text: str) -> list[str]:
    return [p for p in text.strip().split(",") if p.strip()]


def _json_checks(prompt: str) -> list[Check]:
    checks: list[Check] = []
    asked = _JSON_ASKED.search(prompt)
    if asked and (asked.group(1) or "").lower() == "array":
        rule = "answer with a valid JSON array"
        checks.append(Check("json_array", lambda t: isinstance(parse_json(t), list), rule))
    elif asked:
        checks.append(Check("json", lambda t: parse_json(t) is not None, "answer with valid JSON"))
    if _NO_FENCE.search(prompt):
        rule = "no code block (no ``` fences)"
        checks.append(Check("no_code_block", lambda t: "```" not in t, rule, tidy=_unfenced))
    return checks


def _unfenced(text: str) -> str:
    """The text without its code fences (the lines that open and close a block)."""
    return "\n".join(line for line in text.strip().splitlines() if not _FENCE_LINE.match(line))


def _no_markers(prompt: str) -> list[Check]:
    """ "one per line, with no numbers, bullets or other text"; "without bullet points"."""
    if not _NO_MARKERS.search(prompt):
        return []
    test = lambda t: not _LIST_LINE.search(t)  # noqa: E731
    rule = "no bullets or numbers before the lines"
    return [Check("no_list_markers", test, rule, tidy=lambda t: _MARKER.sub("", t))]


def _count_checks(prompt: str) -> list[Check]:
    checks: list[Check] = []
    for match in _EXACT_WORDS.finditer(prompt):
        checks.append(_exact_words(_n(match.group(1) or match.group(2))))
    for match in _N_WORD.finditer(prompt):
        checks.append(_exact_words(_n(match.group(1))))
    for match in _FEWER_WORDS.finditer(prompt):
        n = int(match.group(1))
        shape = Shape(max_words=n - 1)
        checks.append(_word_check(f"words<{n}", n.__gt__, f"use fewer than {n} words", shape))
    for match in _AT_MOST_WORDS.finditer(prompt):
        n = int(match.group(1))
        shape = Shape(max_words=n)
        checks.append(_word_check(f"words<={n}", n.__ge__, f"use at most {n} words", shape))
    return checks


def _exact_words(n: int) -> Check:
    shape = Shape(min_words=n, max_words=n)
    return _word_check(f"words=={n}", n.__eq__, f"use exactly {n} words", shape)


def _list_checks(prompt: str) -> list[Check]:
    lowered = prompt.lower()
    if not _LIST_ASKED.search(lowered):
        return []
    match = _LIST_COUNT.search(lowered)
    if match is None:
        match = _LIST_ITEMS.search(lowered)
    if match is None:
        return []
    n = _n(next(g for g in match.groups() if g))
    measure = lambda t: f"{len(_LIST_LINE.findall(t))} items"  # noqa: E731
    return [Check(f"list_items=={n}", _list_items(n), f"a list of exactly {n} items", measure)]


def _line_checks(prompt: str) -> list[Check]:
    """ "Write two lines", "exactly 3 lines", "five languages, one per line"."""
    match = _LINES.search(prompt) or _PER_LINE.search(prompt)
    if match is None:
        return []
    n = _n(match.group(1))
    measure = lambda t: f"{len(_lines(t))} lines"  # noqa: E731
    test = lambda t: len(_lines(t)) == n  # noqa: E731
    return [Check(f"lines=={n}", test, f"exactly {n} lines", measure, Shape(lines=n))]


def _csv_checks(prompt: str) -> list[Check]:
    """A count stated on one line: "5 colours, comma-separated" or "comma-separated ... 5".
    Read line by line in linear time (a prompt is untrusted; one regex with two ``.*`` was
    quadratic)."""
    for line in prompt.split("\n"):
        if not _CSV.search(line):
            continue
        span = _RANGE.search(line)
        if span is not None and _n(span.group(2)) > _n(span.group(1)):
            return [_csv_check(_n(span.group(2)) - _n(span.group(1)) + 1)]
        word = _csv_count(line)
        if word is not None:
            return [_csv_check(_n(word))]
    return []


def _csv_check(n: int) -> Check:
    measure = lambda t: f"{len(_csv_parts(t))} items"  # noqa: E731
    test = lambda t: len(_csv_parts(t)) == n  # noqa: E731
    return Check(f"csv=={n}", test, f"exactly {n} items separated by commas", measure)


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
    if _LOWER_ASKED.search(lowered):
        checks.append(_case_check("lower", str.lower))
    if _UPPER_ASKED.search(lowered):
        checks.append(_case_check("upper", str.upper))
    return checks


def _case_check(case: Literal["lower", "upper"], cased: Callable[[str], str]) -> Check:
    test = lambda t: _letters(t) == cased(_letters(t))  # noqa: E731
    shape = Shape(case=case)
    return Check(f"{case}case", test, f"only {case}case letters", shape=shape, tidy=cased)


def _occurrence_checks(prompt: str) -> list[Check]:
    """ "use the word 'banana' exactly twice"; "without (using) the letter 'a'"."""
    checks = [_word_times(m.group(1), _times(m.group(2))) for m in _WORD_TIMES.finditer(prompt)]
    return checks + [_no_letter(m.group(1).lower()) for m in _NO_LETTER.finditer(prompt)]


def _word_times(word: str, n: int) -> Check:
    pattern = re.compile(rf"\b{re.escape(word)}\b", re.I)
    measure = lambda t: f"{len(pattern.findall(t))} times"  # noqa: E731
    test = lambda t: len(pattern.findall(t)) == n  # noqa: E731
    return Check(f"word_times=={n}", test, f"use the word '{word}' exactly {n} times", measure)


def _no_letter(letter: str) -> Check:
    measure = lambda t: f"{t.lower().count(letter)} times"  # noqa: E731
    test = lambda t: letter not in t.lower()  # noqa: E731
    rule = f"never use the letter '{letter}' (in any word)"
    return Check("no_letter", test, rule, measure, Shape(without=letter))


def _times(word: str) -> int:
    return {"once": 1, "twice": 2, "thrice": 3}.get(word.lower()) or _n(word.split()[0])


def _answer_checks(prompt: str) -> list[Check]:
    checks = []
    choice = _CHOICE.search(prompt)
    if choice:
        options = {choice.group(1).lower(), choice.group(2).lower()}
        test = lambda t: " ".join(_WORDS.findall(t.lower())) in options  # noqa: E731
        rule = f"answer with only {choice.group(1)} or {choice.group(2)}"
        checks.append(Check("choice", test, rule))
    if _ONE_WORD.search(prompt):
        shape = Shape(min_words=1, max_words=1)
        checks.append(_word_check("one_word", (1).__eq__, "a single word", shape))
    start = _STARTS_WITH.search(prompt)
    if start:
        prefix = start.group(1)
        test = lambda t: t.strip().startswith(prefix)  # noqa: E731
        shape = Shape(prefix=prefix)
        checks.append(Check("starts_with", test, f"start with '{prefix}'", shape=shape))
    end = _ENDS_WITH.search(prompt)
    if end:
        suffix = end.group(1)
        test = lambda t: t.strip().endswith(suffix)  # noqa: E731
        checks.append(Check("ends_with", test, f"end with the exact phrase '{suffix}'"))
    if _NO_COMMAS.search(prompt):
        test = lambda t: "," not in t  # noqa: E731
        checks.append(Check("no_commas", test, "no commas at all", shape=Shape(no_commas=True)))
    return checks


def instruction_checks(prompt: str) -> list[Check]:
    """Every checkable instruction found in ``prompt``."""
    return [
        *_json_checks(prompt),
        *_no_markers(prompt),
        *_count_checks(prompt),
        *_list_checks(prompt),
        *_line_checks(prompt),
        *_csv_checks(prompt),
        *_case_checks(prompt),
        *_occurrence_checks(prompt),
        *_answer_checks(prompt),
    ]


def failed_checks(prompt: str, answer: str) -> list[str] | None:
    """Names of the instructions the answer breaks; None when the prompt has none."""
    checks = instruction_checks(prompt)
    if not checks:
        return None
    return [c.name for c in checks if not c.test(answer)]


def broken_rules(prompt: str, answer: str) -> list[str]:
    """The instructions the answer breaks, in words (empty when it keeps them all)."""
    return [c.broken(answer) for c in instruction_checks(prompt) if not c.test(answer)]
