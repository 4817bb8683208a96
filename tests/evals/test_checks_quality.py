"""Tests for evals.checks_quality: checks judged against a reference solution and its stub."""

from __future__ import annotations

import asyncio

from ensemble.code_checks import stated
from evals.checks_quality import Judged, Quality, judge, markdown

REFERENCE = "def double(n):\n    return 2 * n\n"


def test_sound_and_telling_checks_are_counted() -> None:
    checks = stated("Write `double(n)`. double(2) == 4, double(0) == 0 and double(3) -> 7.").checks
    found = asyncio.run(judge("code-x", checks, REFERENCE))
    assert (found.checks, found.sound, found.telling) == (3, 2, 3)
    assert found.unsound == ("double(3) == 7: got 6",)
    assert found.faultless == 2, "a stated example that fails is a fault"


def test_an_item_without_checks_is_not_run() -> None:
    assert asyncio.run(judge("code-y", (), REFERENCE)) == Judged("code-y", 0, 0, 0)


def test_the_report_row_counts_only_items_with_checks() -> None:
    judged = [Judged("a", 2, 2, 1, (), 2), Judged("b", 0, 0, 0), Judged("c", 2, 1, 2, ("x",), 1)]
    quality = Quality("stated", judged)
    assert quality.row() == "| stated | 3 | 2 | 4 | 75% | 50% | 75% | 75% | 50% |"
    assert "- `c`: `x`" in markdown([quality], "dev")
