"""Task items, their checker specs, and the deterministic dev/test split.

An item is one line of ``data/<kind>.jsonl``::

    {"id": "math-007", "kind": "math", "prompt": "...", "check": {"type": "number", "answer": 7}}

The ``check`` object is a tagged union (``type``), validated on load so a typo in a data file
is an error naming the line, not a silently wrong score. Tool items also carry ``tools``, and
may carry ``tool_choice`` and ``messages`` (the turns after the prompt): see
:mod:`evals.tools`. The split is a pure function of the id, so adding items never moves
existing ones between dev and test.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any, Literal

import msgspec

from evals.formats import Rule
from evals.tools import Tool, ToolCheck, ToolChoice, Turn, request_problem

Kind = Literal["code", "math", "fact", "format", "tool"]
Split = Literal["dev", "test"]
KINDS: tuple[Kind, ...] = ("code", "math", "fact", "format", "tool")
SPLITS: tuple[Split, ...] = ("dev", "test")
DEV_PERCENT = 40


class CodeCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="code"):
    """Run the answer's code, then each assert in ``tests``; every one must pass in time."""

    entry: str
    tests: tuple[str, ...]
    timeout: float = 5.0


class NumberCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="number"):
    """The last number in the answer equals ``answer`` within ``tol`` (absolute)."""

    answer: float
    tol: float = 1e-6


class MatchCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="match"):
    """One of ``answers`` (aliases) appears, normalised, as whole words in the answer."""

    answers: tuple[str, ...]


class FormatCheck(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="format"):
    """Every rule holds for the answer."""

    rules: tuple[Rule, ...]


TextCheck = CodeCheck | NumberCheck | MatchCheck | FormatCheck
"""The checks that judge an answer's text alone."""
Check = TextCheck | ToolCheck
_CHECK_OF_KIND: dict[Kind, type[Check]] = {
    "code": CodeCheck,
    "math": NumberCheck,
    "fact": MatchCheck,
    "format": FormatCheck,
    "tool": ToolCheck,
}


class Item(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One task: what is asked and how it is judged.

    ``prompt`` is the first user message; a tool item's request adds ``tools``, its
    ``tool_choice`` and the ``messages`` that follow the prompt (see :attr:`body`).
    """

    id: str
    kind: Kind
    prompt: str
    check: Check
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    messages: tuple[Turn, ...] = ()

    @property
    def split(self) -> Split:
        return split_of(self.id)

    @property
    def body(self) -> dict[str, Any]:
        """The chat request the harness sends for this item, less model and sampling."""
        user = {"role": "user", "content": self.prompt}
        body: dict[str, Any] = {"messages": [user, *(turn.wire() for turn in self.messages)]}
        if self.tools:
            body["tools"] = [msgspec.to_builtins(tool) for tool in self.tools]
        if self.tool_choice is not None:
            body["tool_choice"] = msgspec.to_builtins(self.tool_choice)
        return body

    @property
    def prompt_hash(self) -> str:
        """A digest of what the answer depends on besides model and sampling: the prompt for
        a text item (so earlier caches stay valid), the whole request body for a tool item."""
        text = json.dumps(self.body, sort_keys=True) if self.kind == "tool" else self.prompt
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def split_of(item_id: str) -> Split:
    """``dev`` for about ``DEV_PERCENT``% of ids, ``test`` for the rest, by sha256 of the id."""
    bucket = int(hashlib.sha256(item_id.encode()).hexdigest()[:8], 16) % 100
    return "dev" if bucket < DEV_PERCENT else "test"


class SuiteError(ValueError):
    """A data file line that is not a valid item (the message names file and line)."""


def parse_items(lines: Iterable[str], source: str = "<items>") -> list[Item]:
    """Parse JSONL lines (blank lines skipped); raises :class:`SuiteError` on the first bad one."""
    items: list[Item] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = msgspec.json.decode(line, type=Item)
        except msgspec.DecodeError as exc:
            raise SuiteError(f"{source}:{number}: {exc}") from exc
        problem = item_problem(item)
        if problem:
            raise SuiteError(f"{source}:{number}: {problem}")
        items.append(item)
    return items


def item_problem(item: Item) -> str | None:
    """What is wrong with a decoded item beyond its shape, or None."""
    if not isinstance(item.check, _CHECK_OF_KIND[item.kind]):
        return f"a {item.kind} item cannot use this check"
    if isinstance(item.check, ToolCheck):
        return request_problem(item.check, item.tools, item.tool_choice, item.messages)
    if item.tools or item.tool_choice is not None or item.messages:
        return "only tool items carry tools, tool_choice or messages"
    return None


def load_suite() -> list[Item]:
    """Every item shipped in ``evals/data``, sorted by id; ids must be unique."""
    items: list[Item] = []
    data = resources.files("evals").joinpath("data")
    for entry in sorted(data.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".jsonl"):
            items += parse_items(entry.read_text("utf-8").splitlines(), entry.name)
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise SuiteError(f"duplicate item ids: {', '.join(duplicates)}")
    return sorted(items, key=lambda item: item.id)


def select(
    items: Sequence[Item],
    *,
    split: Split | None = None,
    kinds: Sequence[Kind] = (),
    limit: int | None = None,
) -> list[Item]:
    """Items of ``split`` (both when None) and ``kinds`` (all when empty); ``limit`` per kind."""
    chosen = [i for i in items if (split is None or i.split == split)]
    chosen = [i for i in chosen if not kinds or i.kind in kinds]
    if limit is None:
        return chosen
    taken: dict[str, int] = {}
    kept: list[Item] = []
    for item in chosen:
        if taken.get(item.kind, 0) < limit:
            taken[item.kind] = taken.get(item.kind, 0) + 1
            kept.append(item)
    return kept
