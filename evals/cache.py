"""Every answer a model gave, on disk (SQLite), so re-runs and re-scoring never re-ask.

An answer is keyed by what determines it: the model asked, the item and the exact prompt (by
hash), and the sampling settings. Only successful answers are stored; a failed request is
asked again next time. Scores are not stored: they are recomputed from the answer, so a fixed
checker re-scores old answers for free.

The file's schema version is SQLite's ``user_version``. Version 1 added the answer's tool
calls; a version 0 file (no ``tool_calls`` column) gains the column on open, and its answers
load with no calls, which is what they had.

A fitting script reads member outputs directly::

    with Cache(DEFAULT_CACHE) as cache:
        for key, answer in cache.entries(model="qwen2.5-coder-0.5b"):
            ...
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

DEFAULT_CACHE = Path("~/.cache/booagent/eval.sqlite3")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    model TEXT NOT NULL,
    item_id TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    max_tokens INTEGER NOT NULL,
    temperature REAL NOT NULL,
    seed INTEGER NOT NULL,
    answer TEXT NOT NULL,
    latency REAL NOT NULL,
    usage TEXT,
    node TEXT,
    strategy TEXT,
    metadata TEXT,
    finish_reason TEXT,
    created REAL NOT NULL,
    tool_calls TEXT,
    PRIMARY KEY (model, item_id, prompt_hash, max_tokens, temperature, seed)
)
"""
_KEY_COLUMNS = "model, item_id, prompt_hash, max_tokens, temperature, seed"
_VALUE_COLUMNS = "answer, latency, usage, node, strategy, metadata, finish_reason, tool_calls"
SCHEMA_VERSION = 1


class CacheError(Exception):
    """A cache file this version cannot read (written by a newer one)."""


@dataclass(frozen=True, slots=True)
class Key:
    """What an answer depends on."""

    model: str
    item_id: str
    prompt_hash: str
    max_tokens: int
    temperature: float
    seed: int


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One tool call of an answer as the SDK returned it: the tool's name and its arguments,
    JSON text kept verbatim (arguments that do not parse are the model's, for the scorer)."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Answer:
    """One model answer as the gateway returned it.

    ``latency`` is the client-side wall time in seconds; ``node`` and ``strategy`` come from
    the ``x-booagent-node`` / ``x-booagent-strategy`` headers; ``metadata`` is the response
    body's ``booagent`` object, when the gateway sent one; ``tool_calls`` are the calls the
    answer made, in order.
    """

    text: str
    latency: float
    usage: dict[str, int] | None = None
    node: str | None = None
    strategy: str | None = None
    metadata: dict[str, Any] | None = None
    finish_reason: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class Cache:
    """A SQLite file of answers; use from one thread (the runner's event loop)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        try:
            _migrate(self._db, self.path)
        except CacheError:
            self._db.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    def get(self, key: Key) -> Answer | None:
        """The stored answer for ``key``, if any."""
        where = " AND ".join(f"{c.strip()} = ?" for c in _KEY_COLUMNS.split(","))
        row = self._db.execute(
            f"SELECT {_VALUE_COLUMNS} FROM answers WHERE {where}", _key_values(key)
        ).fetchone()
        return None if row is None else _answer(row)

    def put(self, key: Key, answer: Answer) -> None:
        """Store (or replace) the answer for ``key``."""
        values = (
            answer.text,
            answer.latency,
            _dump(answer.usage),
            answer.node,
            answer.strategy,
            _dump(answer.metadata),
            answer.finish_reason,
            _dump([[c.name, c.arguments] for c in answer.tool_calls] or None),
            time.time(),
        )
        self._db.execute(
            f"INSERT OR REPLACE INTO answers ({_KEY_COLUMNS}, {_VALUE_COLUMNS}, created) "
            f"VALUES ({', '.join('?' * 15)})",
            (*_key_values(key), *values),
        )
        self._db.commit()

    def entries(self, model: str | None = None) -> Iterator[tuple[Key, Answer]]:
        """Every stored answer (of ``model`` when given), oldest first."""
        query = f"SELECT {_KEY_COLUMNS}, {_VALUE_COLUMNS} FROM answers"
        params: tuple[str, ...] = ()
        if model is not None:
            query, params = f"{query} WHERE model = ?", (model,)
        for row in self._db.execute(f"{query} ORDER BY created", params).fetchall():
            yield Key(*row[:6]), _answer(row[6:])

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0])


def _key_values(key: Key) -> tuple[Any, ...]:
    return (key.model, key.item_id, key.prompt_hash, key.max_tokens, key.temperature, key.seed)


def _answer(row: tuple[Any, ...]) -> Answer:
    text, latency, usage, node, strategy, metadata, finish, calls = row
    tool_calls = tuple(ToolCall(name, arguments) for name, arguments in _load(calls) or ())
    return Answer(text, latency, _load(usage), node, strategy, _load(metadata), finish, tool_calls)


def _migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the file to :data:`SCHEMA_VERSION` (creating it when empty)."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise CacheError(
            f"{path} has cache schema {version}; this version reads up to {SCHEMA_VERSION}"
        )
    db.execute(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(answers)")}
    if "tool_calls" not in columns:
        db.execute("ALTER TABLE answers ADD COLUMN tool_calls TEXT")
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.commit()
