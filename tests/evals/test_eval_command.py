"""`booagent eval` end to end: a fake member behind the real gateway, over real HTTP.

The member is a :class:`FaultServer` that always gives the same answer, so which items score
is known, and its request count shows what the cache saved.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner

from evals.items import load_suite, select
from evals.runner import cached_records, run
from gateway.cli import main
from tests.faults.upstream import FaultServer, Scenario
from tests.harness import make_settings, running_gateway

POLICIES = {
    "timeouts": {"connect": 1, "first_token": 2, "stall": 2, "total": 10, "queue": 5},
    "retry": {"attempts": 1, "max_retry_after": 1},
    "health": {"interval": 0.2, "timeout": 0.5},
}
MATH = select(load_suite(), kinds=["math"], limit=3)  # math-001..003: answers 7, 24, 82
TOOLS = select(load_suite(), kinds=["tool"], limit=3)


@contextmanager
def gateway_over(node: FaultServer) -> Iterator[str]:
    """The gateway in front of one member, ``fake``, served by ``node``; yields its URL."""
    with node.in_thread():
        settings = make_settings(
            members=[{"name": "fake"}],
            nodes=[{"name": node.name, "member": "fake", "url": node.url}],
            routes={"general": ["fake"], "code": ["fake"], "chore": ["fake"]},
            policies=POLICIES,
        )
        with running_gateway(settings) as base:
            yield base


def eval_args(base: str, tmp_path: Path) -> list[str]:
    return [
        "eval",
        "--against",
        base,
        "--members",
        "fake",
        "--split",
        "all",
        "--kinds",
        "math",
        "--limit",
        "3",
        "--out",
        str(tmp_path / "out"),
        "--cache",
        str(tmp_path / "cache.sqlite3"),
    ]


class TestEvalCommand:
    """The command scores answers, writes the report and chart, and caches answers."""

    def test_table_report_chart_and_cache(self, tmp_path: Path) -> None:
        node = FaultServer("node-1")
        node.text = "12 - 5 = 7, so the answer is 7."
        with gateway_over(node) as base:
            first = CliRunner().invoke(main, eval_args(base, tmp_path))
            asked = node.requests
            second = CliRunner().invoke(main, eval_args(base, tmp_path))
        assert first.exit_code == 0, first.output
        assert second.exit_code == 0, second.output
        assert asked == 3
        assert node.requests == asked, "the second run is answered from the cache"
        assert "| target | math | overall |" in first.output
        assert "| `fake` | 33% | **33%** |" in first.output
        assert "cache" in second.output
        report = (tmp_path / "out" / "report.md").read_text()
        assert "| `fake` | 33% | **33%** |" in report
        assert "max_tokens 256, temperature 0, seed 1234" in report
        assert (tmp_path / "out" / "accuracy_vs_latency.png").read_bytes().startswith(b"\x89PNG")

    def test_requests_are_deterministic_and_headers_recorded(self, tmp_path: Path) -> None:
        node = FaultServer("node-1")
        node.text = "24"
        cache = tmp_path / "cache.sqlite3"
        with gateway_over(node) as base:
            records = run(base, ["fake"], MATH, cache_path=cache)
        body = node.last_body or {}
        assert (body.get("temperature"), body.get("seed")) == (0.0, 1234)
        assert 256 in (body.get("max_tokens"), body.get("max_completion_tokens"))
        assert [r.correct for r in records] == [False, True, False]
        assert {r.node for r in records} == {"node-1"}
        assert all(r.latency > 0 for r in records)
        for record in records:  # node time is the member calls' own (rounded) latencies
            calls = (record.metadata or {})["calls"]
            assert len(calls) == 1 and record.node_seconds == calls[0]["latency_s"] >= 0
        assert all(r.usage and r.usage["completion_tokens"] == 1 for r in records)
        again = cached_records(["fake"], MATH, cache_path=cache)
        assert [(r.item_id, r.correct, r.cached) for r in again] == [
            (r.item_id, r.correct, True) for r in records
        ]

    def test_tool_items_are_scored_by_their_calls(self, tmp_path: Path) -> None:
        """The node writes a call as text; the gateway returns it as ``tool_calls``, which the
        client records, the scorer judges and the table shows as the ``tool`` kind."""
        node = FaultServer("node-1")
        call = {"name": "get_current_weather", "arguments": {"location": "Dublin"}}
        node.text = f"<tool_call>\n{json.dumps(call)}\n</tool_call>"
        with gateway_over(node) as base:
            args = eval_args(base, tmp_path)
            args[args.index("math")] = "tool"
            result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        assert node.requests == 3
        assert "| target | tool | overall |" in result.output
        assert "| `fake` | 33% | **33%** |" in result.output, "tool-001 asks for Dublin's weather"
        (record,) = cached_records(["fake"], TOOLS[:1], cache_path=tmp_path / "cache.sqlite3")
        assert record.correct and [c.name for c in record.tool_calls] == [call["name"]]

    def test_failed_requests_are_recorded_and_not_cached(self, tmp_path: Path) -> None:
        node = FaultServer("node-1", Scenario.CONTEXT_LENGTH)
        cache = tmp_path / "cache.sqlite3"
        with gateway_over(node) as base:
            first = run(base, ["fake"], MATH, cache_path=cache)
            second = run(base, ["fake"], MATH, cache_path=cache)
        assert all(r.error and not r.correct for r in first + second)
        assert node.requests == 6, "errors are asked again"

    def test_unknown_member_is_a_clear_error(self, tmp_path: Path) -> None:
        node = FaultServer("node-1")
        with gateway_over(node) as base:
            args = eval_args(base, tmp_path)
            args[args.index("fake")] = "nope"
            result = CliRunner().invoke(main, args)
        assert result.exit_code != 0
        assert "unknown member 'nope'; the gateway lists fake" in result.output
        assert node.requests == 0
