"""The order the harness asks in: each target meets the nodes in the same state."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evals.cache import Answer, Cache
from evals.client import Sampling
from evals.items import load_suite, select
from evals.runner import run_async

ITEMS = select(load_suite(), kinds=["fact", "math"], limit=2)


class RecordingAsker:
    """Answers every request with "7" and remembers who was asked what, in order."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    async def ask(self, model: str, body: Mapping[str, Any], sampling: Sampling) -> Answer:
        item = next(i for i in ITEMS if i.body == body)
        self.asked.append((model, item.id))
        return Answer("7", 0.01)


def test_each_target_goes_through_every_item_before_the_next_target(tmp_path: Path) -> None:
    """llama_cpp.server reuses the prompt it evaluated last, and its answers change with it;
    asked item by item, one target always found the item's own prompt cached by the target
    before it, and the same model, prompt and seed scored differently."""
    asker = RecordingAsker()
    with Cache(tmp_path / "cache.sqlite3") as cache:
        records = asyncio.run(run_async(asker, ["a", "b"], ITEMS, cache))  # type: ignore[arg-type]
    ids = [item.id for item in ITEMS]
    assert asker.asked == [("a", i) for i in ids] + [("b", i) for i in ids]
    assert [(r.target, r.item_id) for r in records] == asker.asked
