"""Tests for bench.soak: slopes, per-interval latency and the report of a soak run."""

from __future__ import annotations

import datetime

import pytest

from bench.chaos import ChaosReport, ChaosSettings
from bench.exchange import Exchange
from bench.report import machine
from bench.soak import ProcessSample, SoakReport, SoakSettings, least_squares_slope
from bench.soak_report import soak_markdown


def test_the_slope_of_a_line_is_its_rate() -> None:
    assert least_squares_slope([(0, 10), (1, 12), (2, 14), (3, 16)]) == pytest.approx(2.0)
    assert least_squares_slope([(0, 5), (1, 5), (2, 5)]) == 0
    assert least_squares_slope([(0, 1), (1, 2)]) is None


def _report(samples: list[tuple[float, ProcessSample]], exchanges: list[Exchange]) -> SoakReport:
    chaos_settings = ChaosSettings(duration=7200)
    chaos = ChaosReport(chaos_settings, machine(), datetime.datetime.now().astimezone())
    chaos.window = (0.0, 7200.0)
    chaos.exchanges = exchanges
    return SoakReport(SoakSettings(chaos_settings, 600, 600), chaos, samples)


def _done(started: float, took: float) -> Exchange:
    return Exchange("r", "chat", False, started, started + took, 200, "a", True, "", "stop")


def test_growth_after_the_warmup_is_what_the_slope_measures() -> None:
    """A process that grows 1 MiB an hour after a start-up jump reports +1 MiB/h, and the
    jump during the warm-up does not count."""
    samples = [(0.0, ProcessSample(50 * 1024, 20, 9))]
    samples += [(h * 600.0, ProcessSample(int((100 + h / 6) * 1024), 25, 12)) for h in range(1, 13)]
    report = _report(samples, [])
    slope = report.slope([(t, v / 1024) for t, v in report.series("rss_kib")])
    assert slope == pytest.approx(1.0, rel=0.01)
    text = soak_markdown(report)
    assert "| gateway resident memory | 50.0 MiB | 102.0 MiB |" in text
    assert "+1.00 MiB" in text


def test_latency_is_taken_per_interval_of_completed_requests() -> None:
    samples = [(600.0, ProcessSample(1, 1, 1)), (1200.0, ProcessSample(1, 1, 1))]
    exchanges = [_done(10, 1.0), _done(20, 3.0), _done(30, 2.0), _done(700, 5.0)]
    rows = _report(samples, exchanges).latency()
    assert [(round(h, 3), p50, p95, n) for h, p50, p95, n in rows] == [
        (round(600 / 3600, 3), 2.0, 3.0, 3), (round(1200 / 3600, 3), 5.0, 5.0, 1),
    ]  # fmt: skip
