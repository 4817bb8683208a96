"""The overhead and memory benchmarks, end to end with tiny numbers (no timed assertions)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner

from bench.memory import MemoryReport, MemorySettings, RssSample, memory_markdown
from bench.overhead import OverheadSettings, run_overhead
from bench.procs import alive
from bench.render import overhead_markdown
from bench.report import machine
from gateway.cli import main


def test_overhead_reports_every_figure_and_leaves_no_process() -> None:
    """Both modes at each level, relay cost, CPU, RSS and each bound's ceiling are reported;
    every process is gone."""
    settings = OverheadSettings(requests=20, concurrency=(1, 4), chunks=10, rounds=2, warmup=5)
    report = run_overhead(settings)

    assert [(lv.mode, lv.concurrency) for lv in report.levels] == [
        ("whole", 1),
        ("whole", 4),
        ("stream", 1),
        ("stream", 4),
    ]
    for level in report.levels:
        assert list(level.bounds) == ["relay", "asgi", "litestar"]
        for side in (level.direct, level.gateway, *level.bounds.values()):
            assert side.errors == 0
            assert side.requests == 20
            assert side.rps > 0
            assert all(math.isfinite(v) for v in (side.latency.p50, side.latency.p99))
        assert math.isfinite(level.added.p95)
        assert level.gateway.cpu_per_1000 >= 0
    assert report.relay is not None and math.isfinite(report.relay.per_chunk_us)
    assert report.gateway_peak_rss_kib > 0
    assert len(report.pids) == 5
    assert not any(alive(pid) for pid in report.pids)

    text = overhead_markdown(report)
    for needle in ("## Gateway overhead", "TTFT added", "gateway / direct", "CPU s per 1k"):
        assert needle in text
    assert "Per-chunk relay cost" in text and "peak RSS" in text and "bare TCP relay" in text
    assert "Litestar floor" in text and "bare ASGI floor" in text


def test_memory_command_writes_its_section_and_keeps_the_rest(tmp_path: Path) -> None:
    """`booagent bench memory` replaces only its own section of the markdown file."""
    out = tmp_path / "performance.md"
    out.write_text("# Performance\n\n## Gateway memory\n\nold figures\n\n## Other\n\nkept\n")
    args = ["bench", "memory", "--requests", "200", "--concurrency", "4", "--interval", "0.1"]
    result = CliRunner().invoke(main, [*args, "--out", str(out)])

    assert result.exit_code == 0, result.output
    written = out.read_text()
    assert "old figures" not in written
    assert "## Other\n\nkept" in written
    assert "200 requests" in written and "0 errors" in written and "growth" in written


def test_instructions_are_counted_per_request_and_per_chunk(tmp_path: Path) -> None:
    """`booagent bench instructions` counts every phase under callgrind, the long stream costs
    more than the short one, and the section is written; needs valgrind (on the CI machine)."""
    out = tmp_path / "performance.md"
    result = CliRunner().invoke(
        main, ["bench", "instructions", "--requests", "10", "--chunks", "20", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    written = out.read_text()
    assert "## Gateway instructions per request" in written
    rows = re.findall(r"^\| (whole|stream) \| (\d+) \| ([\d.]+) \| (\d+) \|$", written, re.M)
    counts = {(mode, int(tokens)): float(m) for mode, tokens, m, _ in rows}
    assert set(counts) == {("whole", 4), ("stream", 4), ("stream", 20)}
    assert all(errors == "0" for *_, errors in rows)
    assert counts["whole", 4] > 0 and counts["stream", 4] < counts["stream", 20]
    per_chunk = re.search(r"Per relayed chunk: \*\*(\d+)k instructions", written)
    assert per_chunk is not None and int(per_chunk.group(1)) > 0


def test_memory_series_lists_each_sample_once_and_ends_with_the_last() -> None:
    """The RSS series is evenly spaced, ends with the run's last sample and repeats none."""
    kib = 64 * 1024
    for count in (1, 10, 11, 23):
        samples = [RssSample(float(i), i * 100, kib + i) for i in range(count)]
        report = MemoryReport(MemorySettings(), machine(), datetime.now(UTC), samples=samples)
        line = next(x for x in memory_markdown(report).splitlines() if "by requests served" in x)
        served = [int(p.split(":")[0].replace(",", "")) for p in line.split(": ", 1)[1].split(", ")]
        assert served == sorted(set(served)) and served[-1] == (count - 1) * 100
        assert 1 <= len(served) <= 11
