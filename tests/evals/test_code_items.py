"""Tests for the shipped code items: their hidden tests accept a reference and reject a stub.

Every code item has a reference solution in ``evals/data/references/code.jsonl``. Its hidden
tests must pass for that reference and fail for a stub with the same names, both run in the
eval's own sandbox (:func:`evals.sandbox.run_tests`), as a model's answer is.
"""

from __future__ import annotations

import pytest

import evals.score
from evals.items import SPLITS, CodeCheck, Item, Split, load_suite, select
from evals.references import load_references, stub_of
from evals.sandbox import Outcome, run_tests
from evals.score import definitions, score

_WITH_EXAMPLES = (
    "028 035 040 059 061 063 065 066 069 070 072 074 077 078 080 081 083 085 087 089 090 093 "
    "095 098 099 100 103 104 107 108 110 113 114 115 116 118 120 121 124 126 127 130 132 134 "
    "135 137 143 145 146 147"
)
WITH_EXAMPLES = frozenset(f"code-{number}" for number in _WITH_EXAMPLES.split())
"""The code items whose prompt states examples (calls and their results); the rest state none."""
CODE_ITEMS = [item for item in load_suite() if item.kind == "code"]


@pytest.fixture(scope="module")
def solutions() -> dict[str, str]:
    """The reference solution of each code item, by id."""
    return load_references()


def check_of(item: Item) -> CodeCheck:
    assert isinstance(item.check, CodeCheck), item.id
    return item.check


class TestSuite:
    """There are enough code items, each has a reference, and examples are spread over splits."""

    def test_at_least_120_code_items(self) -> None:
        assert len(CODE_ITEMS) >= 120

    def test_every_item_has_exactly_one_reference(self, solutions: dict[str, str]) -> None:
        assert sorted(solutions) == [item.id for item in CODE_ITEMS]

    def test_example_ids_are_code_items(self) -> None:
        missing = WITH_EXAMPLES - {item.id for item in CODE_ITEMS}
        assert not missing, sorted(missing)

    @pytest.mark.parametrize("split", SPLITS)
    def test_each_split_has_items_with_and_without_examples(self, split: Split) -> None:
        ids = [item.id for item in select(CODE_ITEMS, split=split)]
        with_examples = sum(item_id in WITH_EXAMPLES for item_id in ids)
        assert with_examples >= 10, (split, with_examples)
        assert len(ids) - with_examples >= 10, (split, len(ids) - with_examples)


class TestStub:
    """The stub keeps the reference's names and nothing of its behaviour."""

    def test_functions_return_none_and_classes_answer_none(self) -> None:
        solution = (
            "import math\n\nclass Box:\n    def get(self):\n        return 1\n\n"
            "def f(x):\n    return math.floor(x)\n"
        )
        stub = stub_of(solution)
        outcome = run_tests(stub, ("assert f(1) is None", "assert Box(2).get(3) is None"))
        assert outcome.passed, outcome.detail


@pytest.mark.parametrize("item", CODE_ITEMS, ids=[item.id for item in CODE_ITEMS])
class TestHiddenTests:
    """Each item's hidden tests pass for its reference and fail for a stub."""

    def test_reference_passes(self, item: Item, solutions: dict[str, str]) -> None:
        check = check_of(item)
        outcome = run_tests(solutions[item.id], check.tests, check.timeout)
        assert outcome.passed, outcome.detail

    def test_stub_fails(self, item: Item, solutions: dict[str, str]) -> None:
        check = check_of(item)
        stub = stub_of(solutions[item.id])
        assert not run_tests(stub, check.tests, check.timeout).passed

    def test_scorer_runs_the_reference_as_an_answer(
        self, item: Item, solutions: dict[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A fenced reference gets past extraction and the entry check to the sandbox, whole."""
        ran: list[str] = []

        def fake_run(code: str, tests: tuple[str, ...], timeout: float) -> Outcome:
            ran.append(code)
            return Outcome(True, "not run")

        monkeypatch.setattr(evals.score, "run_tests", fake_run)
        solution = solutions[item.id]
        assert score(item, f"Here you go:\n```python\n{solution}```\n").correct
        assert ran == [definitions(solution)]
