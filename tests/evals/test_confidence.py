"""Tests for evals.confidence: which dev items log-probs judge, and the threshold replay."""

from __future__ import annotations

from evals.confidence import Sure, replay, unjudged
from evals.items import load_suite, select
from evals.runner import Record


def strong(item: str, correct: bool, latency: float = 2.0) -> Record:
    return Record("strong", item, "fact", "dev", "", correct, "", latency, latency)


def test_only_items_no_checker_can_judge_are_asked() -> None:
    """Code, JSON and checkable formats have their own signals; facts have none."""
    dev = select(load_suite(), split="dev")
    kinds = {item.kind for item in unjudged(dev)}
    assert "fact" in kinds and "code" not in kinds
    assert all(item.kind != "format" or "exactly" not in item.prompt for item in unjudged(dev))


def test_a_sure_cheap_answer_is_kept_and_an_unsure_one_replaced() -> None:
    sure = [Sure("a", True, 0.95, 0.5), Sure("b", False, 0.40, 0.5), Sure("c", False, None, 0.5)]
    records = {"a": strong("a", False), "b": strong("b", True), "c": strong("c", True)}
    result = replay(sure, records, 0.9)
    assert result.accuracy == 1.0 and round(result.accepted, 2) == 0.33
    assert result.seconds == (0.5 * 3 + 2.0 * 2) / 3
    everything = replay(sure, records, 0.0)
    assert round(everything.accuracy, 2) == 0.67, "item c has no log-probs: never accepted"
