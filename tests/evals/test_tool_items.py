"""Tests for tool items: the shipped ones, their validation on load, and the request they make."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from evals.cache import ToolCall
from evals.items import Item, SuiteError, load_suite, parse_items
from evals.score import score
from evals.tools import NamedChoice, ToolCheck

UNIT = {"type": "string", "enum": ["celsius", "fahrenheit"]}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"location": {"type": "string"}, "unit": UNIT},
            "required": ["location"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Local time in a time zone.",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
BASE: dict[str, Any] = {
    "id": "tool-1",
    "kind": "tool",
    "prompt": "Weather in Oslo, in celsius?",
    "tools": [WEATHER, TIME],
    "check": {
        "type": "tool",
        "aspect": "arguments",
        "calls": [
            {
                "name": "get_weather",
                "arguments": {
                    "location": {"match": "text", "value": "Oslo"},
                    "unit": {"match": "exact", "value": "celsius"},
                },
            }
        ],
    },
}
TURNS = [
    {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "name": "get_weather", "arguments": {"location": "Oslo"}}],
    },
    {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 12}'},
]


@pytest.fixture(scope="module")
def tool_items() -> list[Item]:
    return [item for item in load_suite() if item.kind == "tool"]


def edited(change: Callable[[dict[str, Any]], object]) -> str:
    """``BASE`` with ``change`` applied, as a JSON line."""
    line = copy.deepcopy(BASE)
    change(line)
    return json.dumps(line)


def as_result(line: dict[str, Any]) -> dict[str, Any]:
    """``line`` made a result item: the earlier call and its result, then a text answer."""
    line["check"] = {"type": "tool", "aspect": "result", "answers": ["12"]}
    line["messages"] = copy.deepcopy(TURNS)
    return line


def expected_argument(line: dict[str, Any]) -> dict[str, Any]:
    arguments: dict[str, Any] = line["check"]["calls"][0]["arguments"]
    return arguments


BAD_LINES: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    (
        "tools on a text item",
        lambda d: d.update(kind="fact", check={"type": "match", "answers": ["x"]}),
        "only tool items carry tools, tool_choice or messages",
    ),
    (
        "a text check on a tool item",
        lambda d: d.update(check={"type": "match", "answers": ["x"]}),
        "a tool item cannot use this check",
    ),
    ("no tools", lambda d: d.update(tools=[]), "a tool item offers at least one tool"),
    ("a repeated tool", lambda d: d.update(tools=[WEATHER, WEATHER]), "two tools share a name"),
    (
        "an invalid schema",
        lambda d: d["tools"][1]["function"]["parameters"]["properties"].update(
            timezone={"type": "strng"}
        ),
        "tool get_time: invalid parameters schema: 'strng' is not valid",
    ),
    (
        "an expected tool not offered",
        lambda d: d["check"]["calls"][0].update(name="get_forecast"),
        "the check expects 'get_forecast', which is not offered",
    ),
    (
        "an argument the schema lacks",
        lambda d: expected_argument(d).update(city={"match": "present"}),
        "get_weather.city: the tool has no such argument",
    ),
    (
        "an expected value the schema refuses",
        lambda d: expected_argument(d).update(unit={"match": "exact", "value": "celcius"}),
        "get_weather.unit: 'celcius' is not one of ['celsius', 'fahrenheit']",
    ),
    (
        "an unknown constraint",
        lambda d: expected_argument(d).update(unit={"match": "regex", "value": "c.*"}),
        "Invalid value 'regex'",
    ),
    (
        "calls and answers together",
        lambda d: d["check"].update(answers=["Oslo"]),
        "a tool check has either calls or answers",
    ),
    (
        "a count above the calls listed",
        lambda d: d["check"].update(count=2),
        "count must be between 1 and the 1 calls listed",
    ),
    (
        "a tool_choice naming a tool not offered",
        lambda d: d.update(tool_choice={"type": "function", "function": {"name": "x"}}),
        "tool_choice names 'x', which is not offered",
    ),
    (
        "a forced call where none is expected",
        lambda d: d.update(
            tool_choice="required", check={"type": "tool", "aspect": "no_call", "answers": ["x"]}
        ),
        "tool_choice forces a call but the check expects none",
    ),
    (
        "a named choice of another tool",
        lambda d: d.update(tool_choice={"type": "function", "function": {"name": "get_time"}}),
        "tool_choice names one tool but the check expects another",
    ),
    (
        "a result item without messages",
        lambda d: d["check"].update(aspect="result"),
        "a result item needs messages with the earlier call and its result",
    ),
    (
        "a result for an unknown call",
        lambda d: as_result(d)["messages"][1].update(tool_call_id="c2"),
        "messages: a result for unknown call 'c2'",
    ),
    (
        "a call without its result",
        lambda d: as_result(d)["messages"].pop(),
        "messages: no result for call 'c1'",
    ),
    (
        "an earlier call the schema refuses",
        lambda d: as_result(d)["messages"][0]["tool_calls"][0].update(arguments={}),
        "messages: call 'c1': 'location' is a required property",
    ),
]


class TestParse:
    """A bad tool item is an error naming its line and what is wrong."""

    def test_the_base_line_loads(self) -> None:
        (item,) = parse_items([json.dumps(BASE)])
        assert isinstance(item.check, ToolCheck)

    @pytest.mark.parametrize(
        ("change", "message"), [(c, m) for _, c, m in BAD_LINES], ids=[n for n, _, _ in BAD_LINES]
    )
    def test_bad_line_is_named(
        self, change: Callable[[dict[str, Any]], object], message: str
    ) -> None:
        with pytest.raises(SuiteError) as raised:
            parse_items([json.dumps(BASE), "", edited(change)], "tool.jsonl")
        assert str(raised.value).startswith("tool.jsonl:3: ")
        assert message in str(raised.value)


class TestRequest:
    """An item's request is its prompt, then its turns, with its tools and choice."""

    ITEM = parse_items(
        [edited(lambda d: as_result(d).update(tool_choice="auto"))],
    )[0]

    def test_body(self) -> None:
        body = self.ITEM.body
        assert body["messages"] == [
            {"role": "user", "content": "Weather in Oslo, in celsius?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"location": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": '{"temperature": 12}'},
        ]
        assert body["tools"] == [WEATHER, TIME]
        assert body["tool_choice"] == "auto"

    def test_text_items_send_only_the_prompt(self) -> None:
        item = next(i for i in load_suite() if i.kind == "math")
        assert item.body == {"messages": [{"role": "user", "content": item.prompt}]}

    def test_text_items_keep_their_prompt_hash(self) -> None:
        """Caches written before tool items existed still answer text items."""
        item = next(i for i in load_suite() if i.kind == "fact")
        assert item.prompt_hash == hashlib.sha256(item.prompt.encode()).hexdigest()[:16]

    def test_tool_item_hash_covers_the_tools(self) -> None:
        def describe(d: dict[str, Any]) -> None:
            d["tools"][1]["function"]["description"] = "Time."

        (changed,) = parse_items([edited(describe)])
        (base,) = parse_items([json.dumps(BASE)])
        assert changed.prompt == base.prompt and changed.prompt_hash != base.prompt_hash


class TestShippedToolItems:
    """The shipped tool items are many, balanced, varied and winnable only by the right answer."""

    def test_at_least_40(self, tool_items: list[Item]) -> None:
        assert len(tool_items) >= 40

    def test_aspects_have_roughly_equal_shares(self, tool_items: list[Item]) -> None:
        aspects = Counter(i.check.aspect for i in tool_items if isinstance(i.check, ToolCheck))
        assert set(aspects) == {"choose", "arguments", "no_call", "result"}
        assert all(0.2 <= n / len(tool_items) <= 0.3 for n in aspects.values()), aspects

    def test_every_aspect_is_in_both_splits(self, tool_items: list[Item]) -> None:
        seen = {(i.check.aspect, i.split) for i in tool_items if isinstance(i.check, ToolCheck)}
        assert len(seen) == 8

    def test_two_to_five_tools_each(self, tool_items: list[Item]) -> None:
        assert all(2 <= len(item.tools) <= 5 for item in tool_items)

    def test_some_force_a_call_and_some_expect_two(self, tool_items: list[Item]) -> None:
        assert sum(i.tool_choice == "required" for i in tool_items) >= 2
        assert sum(isinstance(i.tool_choice, NamedChoice) for i in tool_items) >= 2
        assert sum(isinstance(i.check, ToolCheck) and i.check.count == 2 for i in tool_items) >= 3

    def test_no_item_is_won_without_an_answer(self, tool_items: list[Item]) -> None:
        assert not any(score(item, "", []).correct for item in tool_items)

    def test_no_item_is_won_by_calling_a_tool_with_no_arguments(
        self, tool_items: list[Item]
    ) -> None:
        for item in tool_items:
            for offered in item.tools:
                call = ToolCall(offered.function.name, "{}")
                assert not score(item, "", [call]).correct, (item.id, offered.function.name)
