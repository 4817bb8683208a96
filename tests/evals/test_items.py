"""Tests for evals.items: the shipped suite, its validation and its split."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from evals.items import (
    KINDS,
    CodeCheck,
    Item,
    SuiteError,
    load_suite,
    parse_items,
    select,
    split_of,
)
from evals.score import score


@pytest.fixture(scope="module")
def suite() -> list[Item]:
    return load_suite()


class TestSuite:
    """The shipped suite is large, balanced and well formed."""

    def test_at_least_150_items_and_35_per_kind(self, suite: list[Item]) -> None:
        counts = Counter(item.kind for item in suite)
        assert len(suite) >= 150
        assert all(counts[kind] >= 35 for kind in KINDS), counts

    def test_ids_are_unique_and_prefixed_by_kind(self, suite: list[Item]) -> None:
        assert len({item.id for item in suite}) == len(suite)
        assert all(item.id.startswith(f"{item.kind}-") for item in suite)

    def test_split_is_roughly_40_60_in_every_kind(self, suite: list[Item]) -> None:
        for kind in KINDS:
            items = [i for i in suite if i.kind == kind]
            dev = sum(i.split == "dev" for i in items)
            assert 0.25 <= dev / len(items) <= 0.55, (kind, dev, len(items))

    def test_hidden_tests_reject_a_stub(self, suite: list[Item]) -> None:
        """Every code item's asserts fail for a function that returns None."""
        for item in (i for i in suite if i.kind == "code"):
            assert isinstance(item.check, CodeCheck)
            stub = f"def {item.check.entry}(*args):\n    return None"
            assert not score(item, stub).correct, item.id


class TestSplit:
    """The split is a pure function of the id."""

    def test_stable(self) -> None:
        assert [split_of(f"x-{n}") for n in range(50)] == [split_of(f"x-{n}") for n in range(50)]

    def test_known_values(self) -> None:
        assert {split_of(f"x-{n}") for n in range(50)} == {"dev", "test"}


def item_line(kind: str, check: dict[str, Any]) -> str:
    return json.dumps({"id": f"{kind}-1", "kind": kind, "prompt": "p", "check": check})


class TestParse:
    """A bad line is an error naming its source and line."""

    def test_wrong_check_for_kind(self) -> None:
        line = item_line("math", {"type": "match", "answers": ["a"]})
        with pytest.raises(SuiteError, match=r"f.jsonl:2: a math item cannot use this check"):
            parse_items(["", line], "f.jsonl")

    def test_unknown_field(self) -> None:
        line = item_line("math", {"type": "number", "answer": 1, "x": 2})
        with pytest.raises(SuiteError, match=r"f.jsonl:1: .*x"):
            parse_items([line], "f.jsonl")

    def test_unknown_format_rule(self) -> None:
        line = item_line("format", {"type": "format", "rules": [{"rule": "haiku"}]})
        with pytest.raises(SuiteError):
            parse_items([line])


class TestSelect:
    """Selection filters by split and kind, and limits per kind."""

    def test_limit_per_kind(self, suite: list[Item]) -> None:
        chosen = select(suite, split="dev", kinds=["math", "fact"], limit=3)
        assert Counter(i.kind for i in chosen) == {"math": 3, "fact": 3}
        assert all(i.split == "dev" for i in chosen)

    def test_no_filters_keeps_everything(self, suite: list[Item]) -> None:
        assert select(suite) == suite
