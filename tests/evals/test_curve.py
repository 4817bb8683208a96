"""The accuracy-latency curve reads each run back from its own cache."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from evals.cache import Answer, Cache
from evals.client import Sampling
from evals.curve import CURVE_CHART, Point, main, summaries
from evals.items import load_suite, select
from evals.runner import run_async

ITEMS = select(load_suite(), split="dev", kinds=["math"], limit=3)
SAMPLING = Sampling(max_tokens=0)


class Asker:
    """Answers every item the same, after ``latency`` seconds (as recorded, not waited)."""

    def __init__(self, text: str, latency: float) -> None:
        self.text, self.latency = text, latency

    async def ask(self, model: str, body: Mapping[str, Any], sampling: Sampling) -> Answer:
        return Answer(self.text, self.latency)


def cached_run(path: Path, target: str, asker: Asker) -> Path:
    with Cache(path) as cache:
        asyncio.run(run_async(asker, [target], ITEMS, cache, sampling=SAMPLING))  # type: ignore[arg-type]
    return path


def test_a_point_splits_its_cache_from_its_target_at_the_first_colon() -> None:
    point = Point.parse("tested, 10 s=/tmp/a.sqlite3:booagent-cluster:tested")
    assert point == Point("tested, 10 s", Path("/tmp/a.sqlite3"), "booagent-cluster:tested")


@pytest.mark.parametrize("text", ["no-label", "=/tmp/a:t", "x=/tmp/a", "x=:t", "x=/tmp/a:"])
def test_a_malformed_point_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="label=cache:target"):
        Point.parse(text)


def test_each_point_is_its_own_runs_answers(tmp_path: Path) -> None:
    """Two runs of the same target under two configurations, kept apart by their caches."""
    right = str(ITEMS[0].check.answer)  # type: ignore[union-attr]
    fast = cached_run(tmp_path / "fast.sqlite3", "m", Asker("no idea", 1.0))
    slow = cached_run(tmp_path / "slow.sqlite3", "m", Asker(right, 9.0))
    found = summaries(
        [Point("fast", fast, "m"), Point("slow", slow, "m")],
        split="dev", kinds=["math"], sampling=SAMPLING,
    )  # fmt: skip
    assert [(s.target, s.items, s.p95) for s in found] == [("fast", 3, 1.0), ("slow", 3, 9.0)]
    assert found[0].accuracy == 0 and found[1].accuracy > 0


def test_the_command_prints_the_table_and_draws_the_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = cached_run(tmp_path / "run.sqlite3", "m", Asker("7", 2.0))
    main(["--point", f"one={run}:m", "--kinds", "math", "--out", str(tmp_path / "out")])
    assert "| `one` |" in capsys.readouterr().out
    assert (tmp_path / "out" / CURVE_CHART).stat().st_size > 0


def test_a_point_with_no_answers_names_itself(tmp_path: Path) -> None:
    empty = cached_run(tmp_path / "run.sqlite3", "m", Asker("7", 2.0))
    with pytest.raises(SystemExit, match="other: no answer of n"):
        summaries([Point("other", empty, "n")], split="dev", kinds=["math"], sampling=SAMPLING)
