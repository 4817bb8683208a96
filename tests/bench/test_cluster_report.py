"""The cluster benchmark's figures and report, from synthetic outcomes (no nodes needed)."""

from __future__ import annotations

import datetime
from pathlib import Path

from bench.cluster import ClusterReport, ClusterSettings, LevelRun, NodeAlone
from bench.cluster_report import CHART, REPORT, write_report
from bench.report import machine
from bench.sdk_client import Outcome


def _outcome(rid: str, node: str, start: float, first: float | None, end: float) -> Outcome:
    return Outcome(rid, "chat", start, end, first, tokens=11, node=node, status=200)


def _report() -> ClusterReport:
    report = ClusterReport(ClusterSettings(concurrency=(1, 2)), machine(), datetime.datetime.now())
    report.nodes = [("a", "small"), ("b", "big")]
    report.alone = [
        NodeAlone("a", "small", (_outcome("x", "a", 0.0, 0.1, 1.1),), 1.1),
        NodeAlone("b", "big", (_outcome("y", "b", 0.0, 0.5, 2.5),), 2.5),
    ]
    log = {"r1": {"queue_wait_s": 0.0}, "r2": {"queue_wait_s": 0.5}}
    outcomes = (
        _outcome("r1", "a", 0.0, 0.2, 1.0),
        _outcome("r2", "b", 0.0, 0.7, 2.0),
        Outcome("r3", "chore", 0.0, 0.3, status=503, error="503: busy"),
    )
    loads = ({"a": (1, 0), "b": (1, 1)}, {"a": (0, 0), "b": (1, 0)})
    report.levels = [
        LevelRun(1, outcomes[:1], 1.0, loads, log),
        LevelRun(2, outcomes, 2.0, loads, log),
    ]
    return report


def test_figures_come_from_outcomes_and_samples() -> None:
    """Rates, busy fractions, queue waits and the sum of nodes alone are computed as defined."""
    report = _report()
    assert round(report.sum_alone, 2) == round(11 / 1.1 + 11 / 2.5, 2)
    assert report.alone[0].decode == 10.0
    level = report.levels[1]
    assert level.errors == 1
    assert level.rps == 1.0
    assert level.tokens_per_second == 11.0
    assert level.busy("a") == 0.5
    assert level.queued("b") == 0.5
    assert level.queue_wait.p50 == 250.0
    assert level.requests_by_node() == {"a": 1, "b": 1}


def test_report_and_chart_are_written(tmp_path: Path) -> None:
    """`report.md` holds every table and links the PNG chart written beside it."""
    text = write_report(_report(), tmp_path)
    assert (tmp_path / REPORT).read_text() == text
    assert (tmp_path / CHART).read_bytes().startswith(b"\x89PNG")
    for heading in ("## Each node alone", "## Through the gateway", "## How load spreads"):
        assert heading in text
    assert "1 request failed; distinct errors: 503: busy" in text
    assert f"]({CHART})" in text
