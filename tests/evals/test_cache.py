"""Tests for evals.cache: answers survive on disk, keyed by everything they depend on."""

from __future__ import annotations

import sqlite3
import tempfile
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.cache import SCHEMA_VERSION, Answer, Cache, CacheError, Key, ToolCall

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


CALLS = (
    ToolCall("get_weather", '{"location": "Oslo"}'),
    ToolCall("get_time", '{"timezone": "Europe/Oslo"'),
)
OLD_SCHEMA = """
CREATE TABLE answers (
    model TEXT NOT NULL, item_id TEXT NOT NULL, prompt_hash TEXT NOT NULL,
    max_tokens INTEGER NOT NULL, temperature REAL NOT NULL, seed INTEGER NOT NULL,
    answer TEXT NOT NULL, latency REAL NOT NULL, usage TEXT, node TEXT, strategy TEXT,
    metadata TEXT, finish_reason TEXT, created REAL NOT NULL,
    PRIMARY KEY (model, item_id, prompt_hash, max_tokens, temperature, seed)
)
"""

OLD_ROW = ("m", "math-001", "abc", 256, 0.0, 1234, "7", 1.5, None, "n1", None, None, "stop", 0.0)


class TestToolCalls:
    """An answer's tool calls are stored with it, verbatim and in order."""

    def test_round_trip_across_handles(self, tmp_path: Path) -> None:
        answer = Answer("", 0.5, finish_reason="tool_calls", tool_calls=CALLS)
        with Cache(tmp_path / "c.sqlite3") as cache:
            cache.put(KEY, answer)
        with Cache(tmp_path / "c.sqlite3") as cache:
            assert cache.get(KEY) == answer
            assert list(cache.entries()) == [(KEY, answer)]

    @given(
        calls=st.lists(st.builds(ToolCall, st.text(), st.text()), max_size=4).map(tuple),
        text=st.text(),
    )
    def test_any_calls_survive(self, calls: tuple[ToolCall, ...], text: str) -> None:
        answer = Answer(text, 1.0, tool_calls=calls)
        with tempfile.TemporaryDirectory() as folder, Cache(Path(folder) / "c.sqlite3") as cache:
            cache.put(KEY, answer)
            assert cache.get(KEY) == answer


class TestSchemaVersions:
    """A cache written before tool calls were kept still loads; a newer one is refused."""

    def test_old_cache_gains_the_column_and_keeps_its_answers(self, tmp_path: Path) -> None:
        path = tmp_path / "old.sqlite3"
        with closing(sqlite3.connect(path)) as db:
            db.execute(OLD_SCHEMA)
            db.execute(f"INSERT INTO answers VALUES ({', '.join('?' * len(OLD_ROW))})", OLD_ROW)
            db.commit()
        with Cache(path) as cache:
            assert cache.get(KEY) == Answer("7", 1.5, node="n1", finish_reason="stop")
            cache.put(replace(KEY, item_id="tool-001"), Answer("", 0.2, tool_calls=CALLS))
            assert cache.get(replace(KEY, item_id="tool-001")) == Answer("", 0.2, tool_calls=CALLS)
        with closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION

    def test_newer_cache_is_refused(self, tmp_path: Path) -> None:
        path = tmp_path / "new.sqlite3"
        with closing(sqlite3.connect(path)) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        with pytest.raises(CacheError, match="cache schema 2; this version reads up to 1"):
            Cache(path)
