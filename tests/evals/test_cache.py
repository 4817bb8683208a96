"""Tests for evals.cache: answers survive on disk, keyed by everything they depend on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from evals.cache import Answer, Cache, Key

KEY = Key("m", "math-001", "abc", 256, 0.0, 1234)
ANSWER = Answer(
    "7",
    1.5,
    usage={"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    node="n1",
    strategy="route",
    metadata={"calls": [{"latency_s": 1.4}]},
    finish_reason="stop",
)


class TestCache:
    """A stored answer comes back whole, only for its exact key."""

    def test_round_trip_across_handles(self, tmp_path: Path) -> None:
        with Cache(tmp_path / "c.sqlite3") as cache:
            cache.put(KEY, ANSWER)
        with Cache(tmp_path / "c.sqlite3") as cache:
            assert cache.get(KEY) == ANSWER
            assert len(cache) == 1

    def test_every_key_field_matters(self, tmp_path: Path) -> None:
        with Cache(tmp_path / "c.sqlite3") as cache:
            cache.put(KEY, ANSWER)
            for change in (
                {"model": "other"},
                {"item_id": "math-002"},
                {"prompt_hash": "def"},
                {"max_tokens": 128},
                {"temperature": 0.7},
                {"seed": 1},
            ):
                assert cache.get(replace(KEY, **change)) is None, change  # type: ignore[arg-type]

    def test_entries_by_model(self, tmp_path: Path) -> None:
        with Cache(tmp_path / "c.sqlite3") as cache:
            cache.put(KEY, ANSWER)
            cache.put(replace(KEY, model="other"), Answer("8", 2.0))
            assert [k.model for k, _ in cache.entries()] == ["m", "other"]
            assert list(cache.entries(model="other")) == [
                (replace(KEY, model="other"), Answer("8", 2.0))
            ]
