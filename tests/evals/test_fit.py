"""Tests for evals.fit on tool items: the replayed cascade sees the calls a member made."""

from __future__ import annotations

from evals.cache import ToolCall
from evals.fit import body_of, cascade_accepts
from evals.items import load_suite
from evals.runner import Record

ITEM = next(item for item in load_suite() if item.id == "tool-002")  # get_stock_quote


def answered(*calls: ToolCall) -> Record:
    return Record("cheap", ITEM.id, "tool", ITEM.split, "", True, "", 1.0, 1.0, tool_calls=calls)


class TestToolCascade:
    """The cheap member's call is accepted when its arguments fit the tool's schema."""

    def test_the_request_offers_the_items_tools(self) -> None:
        assert body_of(ITEM)["tools"] == ITEM.body["tools"]

    def test_valid_call_is_accepted(self) -> None:
        first = answered(ToolCall("get_stock_quote", '{"symbol": "NVDA"}'))
        assert cascade_accepts(ITEM, first, None, 0.5)

    def test_call_the_schema_refuses_is_escalated(self) -> None:
        first = answered(ToolCall("get_stock_quote", '{"symbol": 7}'))
        assert not cascade_accepts(ITEM, first, None, 0.5)
