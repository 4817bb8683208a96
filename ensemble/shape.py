"""The shape of an answer some instructions ask for, and the grammar that enforces it.

Small models often cannot count: asked for "exactly seven words" they write nine. Both kinds
of llama.cpp server accept a GBNF ``grammar`` with a request and sample only tokens the
grammar allows, so an answer written under :func:`grammar` keeps the shape by construction:
the model still chooses every word, it just cannot write an eighth one, or a capital letter
in an all-lowercase answer, or the letter it was told to avoid.

A :class:`Shape` is what one checkable instruction (:mod:`ensemble.instructions`) says about
the answer's form; :func:`merged` combines the shapes of every instruction of a prompt, and
is ``None`` when they contradict each other. Words are counted as the instruction checks
count them: runs of letters, digits and apostrophes.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

_WORD = re.compile(r"[A-Za-z0-9']+")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Shape:
    """Word-count bounds, a number of lines, letter case, letters never used, a fixed start,
    and no commas; ``None``, empty and ``False`` leave that part free."""

    min_words: int | None = None
    max_words: int | None = None
    lines: int | None = None
    case: Literal["lower", "upper"] | None = None
    without: str = ""
    prefix: str = ""
    no_commas: bool = False


def _pick(a: T, b: T) -> tuple[bool, T]:
    """(compatible, the value both allow) for two settings that must be equal when both set
    (unset is ``None`` or ``""``)."""
    if not a or a == b:
        return True, b
    return not b, a


def merged(shapes: Sequence[Shape]) -> Shape | None:
    """One shape that keeps all of ``shapes``, or ``None`` if no answer could."""
    total = Shape()
    for shape in shapes:
        combined = _merge(total, shape)
        if combined is None:
            return None
        total = combined
    return total if _possible(total) else None


def _merge(a: Shape, b: Shape) -> Shape | None:
    (same_lines, lines), (same_case, case) = _pick(a.lines, b.lines), _pick(a.case, b.case)
    same_prefix, prefix = _pick(a.prefix, b.prefix)
    if not (same_lines and same_case and same_prefix):
        return None
    bounds = [x for x in (a.max_words, b.max_words) if x is not None]
    return replace(
        a,
        min_words=max((x for x in (a.min_words, b.min_words) if x is not None), default=None),
        max_words=min(bounds) if bounds else None,
        lines=lines,
        case=case,
        prefix=prefix,
        without="".join(sorted(set(a.without + b.without))),
        no_commas=a.no_commas or b.no_commas,
    )


def _possible(shape: Shape) -> bool:
    """False for bounds that cross, lines with word counts, or a start the rules forbid."""
    low, high = shape.min_words or 0, shape.max_words
    if high is not None and (high < max(low, 1)):
        return False
    if shape.lines is not None and (shape.min_words or shape.max_words or shape.lines < 1):
        return False
    prefix = shape.prefix
    if high is not None and len(_WORD.findall(prefix)) > high:
        return False
    return all(ch in _allowed_letters(shape) for ch in prefix if ch.isalpha()) and not (
        shape.no_commas and "," in prefix
    )


def _allowed_letters(shape: Shape) -> str:
    letters = {"lower": string.ascii_lowercase, "upper": string.ascii_uppercase}.get(
        shape.case or "", string.ascii_letters
    )
    banned = shape.without.lower() + shape.without.upper()
    return "".join(ch for ch in letters if ch not in banned)


def grammar(shape: Shape) -> str:
    """A GBNF grammar whose every sentence has ``shape``."""
    if shape.lines is not None:
        return _lines_grammar(shape)
    return _words_grammar(shape)


def _literal(text: str) -> str:
    return json.dumps(text)


def _words_grammar(shape: Shape) -> str:
    """Words of allowed letters, digits and apostrophes, joined by a space with at most one
    punctuation mark before it, ending with an optional full stop, ``!`` or ``?``."""
    taken = len(_WORD.findall(shape.prefix)) if shape.prefix else 1
    low = max((shape.min_words or 1) - taken, 0)
    high = None if shape.max_words is None else shape.max_words - taken
    repeat = f"{{{low},}}" if high is None else f"{{{low},{high}}}"
    head = _literal(shape.prefix) if shape.prefix else "word"
    marks = '(";" | ":")' if shape.no_commas else '("," | ";" | ":")'
    return "\n".join(
        [
            f"root ::= {head} (sep word){repeat} [.!?]?",
            f"word ::= [{_allowed_letters(shape)}0-9']+",
            f'sep ::= {marks}? " "',
        ]
    )


def _lines_grammar(shape: Shape) -> str:
    """``lines`` non-empty lines of characters the shape allows."""
    assert shape.lines is not None
    banned = "".join(sorted(set(string.ascii_letters) - set(_allowed_letters(shape))))
    banned += "," if shape.no_commas else ""
    line = f"[^\\n\\r{banned}]"
    first = f"{_literal(shape.prefix)} {line}*" if shape.prefix else f"{line}+"
    rest = f' ("\\n" line){{{shape.lines - 1}}}' if shape.lines > 1 else ""
    return "\n".join([f"root ::= first{rest}", f"first ::= {first}", f"line ::= {line}+"])
