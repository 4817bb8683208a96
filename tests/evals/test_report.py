"""Tests for evals.report and node-seconds: the numbers in the table."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.items import Kind
from evals.report import percentile, summarise, table, write
from evals.runner import Record, node_seconds


def record(target: str, kind: Kind, correct: bool, latency: float, **extra: object) -> Record:
    return Record(
        target=target,
        item_id=f"{kind}-1",
        kind=kind,
        split="dev",
        answer="",
        correct=correct,
        detail="",
        latency=latency,
        node_seconds=latency,
        **extra,  # type: ignore[arg-type]
    )


RECORDS = [
    record("a", "math", True, 1.0),
    record("a", "math", False, 2.0),
    record("a", "code", True, 3.0),
    record("b", "math", False, 4.0, error="boom"),
]


class TestPercentile:
    """Linear interpolation between closest ranks."""

    @pytest.mark.parametrize(
        ("values", "p", "expected"),
        [([], 50, 0.0), ([3.0], 95, 3.0), ([1.0, 2.0, 3.0], 50, 2.0), ([0.0, 10.0], 95, 9.5)],
    )
    def test_values(self, values: list[float], p: float, expected: float) -> None:
        assert percentile(values, p) == pytest.approx(expected)


class TestNodeSeconds:
    """Member calls from the metadata, else the request's own latency."""

    def test_sums_calls(self) -> None:
        metadata = {"calls": [{"latency_s": 1.5}, {"latency_s": 2}, {"latency_s": None}]}
        assert node_seconds(metadata, 9.0) == 3.5

    def test_falls_back_to_latency(self) -> None:
        assert node_seconds(None, 2.0) == 2.0
        assert node_seconds({"strategy": "route"}, 2.0) == 2.0


class TestSummaries:
    """Accuracy per kind and overall, errors counted as wrong."""

    def test_summarise(self) -> None:
        a, b = summarise(RECORDS)
        assert (a.target, a.items, a.errors) == ("a", 3, 0)
        assert a.correct_by_kind == {"math": (1, 2), "code": (1, 1)}
        assert a.accuracy == pytest.approx(2 / 3)
        assert (a.p50, a.node_seconds) == (2.0, 6.0)
        assert (b.accuracy, b.errors) == (0.0, 1)

    def test_table_has_a_row_per_target_and_only_kinds_seen(self) -> None:
        text = table(summarise(RECORDS))
        lines = text.splitlines()
        assert lines[0] == (
            "| target | code | math | overall | p50 s | p95 s | node-s | items | errors |"
        )
        assert lines[2] == "| `a` | 100% | 50% | **67%** | 2.00 | 2.90 | 6.0 | 3 | 0 |"
        assert lines[3].startswith("| `b` | - | 0% | **0%** |")

    def test_tool_items_get_their_own_column_after_the_text_kinds(self) -> None:
        records = [*RECORDS, record("a", "tool", True, 1.0), record("b", "tool", False, 1.0)]
        lines = table(summarise(records)).splitlines()
        assert lines[0].startswith("| target | code | math | tool | overall |")
        assert lines[2].startswith("| `a` | 100% | 50% | 100% | **75%** |")
        assert lines[3].startswith("| `b` | - | 0% | 0% | **0%** |")

    def test_write_report_and_chart(self, tmp_path: Path) -> None:
        report, png = write(summarise(RECORDS), {"split": "dev"}, "2025-01-01 00:00 UTC", tmp_path)
        text = report.read_text()
        assert "- date: 2025-01-01 00:00 UTC" in text
        assert "- split: dev" in text
        assert "- machine: " in text
        assert "accuracy_vs_latency.png" in text
        assert png.read_bytes().startswith(b"\x89PNG")
