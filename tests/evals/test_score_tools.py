"""Tests for the tool scorer: calls judged by tool, schema and values; text where no call is due."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evals.cache import ToolCall
from evals.items import Item, parse_items
from evals.score import arg_problem, same, score
from evals.tools import Exact, Number, OneOf, Present, Text


def tool(name: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": required}
    return {
        "type": "function",
        "function": {"name": name, "description": name, "parameters": parameters},
    }


UNIT = {"type": "string", "enum": ["celsius", "fahrenheit"]}
WEATHER = tool("get_weather", {"location": {"type": "string"}, "unit": UNIT}, ["location"])
FORECAST = tool(
    "get_forecast",
    {"location": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 10}},
    ["location", "days"],
)
ORDER = tool(
    "place_order",
    {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                "required": ["sku", "quantity"],
            },
        },
        "shipping": {
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": ["standard", "express"]},
                "address": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
    },
    ["items"],
)
ALARMS = tool("list_alarms", {}, [])


def make(check: dict[str, Any], tools: list[dict[str, Any]], **extra: Any) -> Item:
    """A tool item, through the same loader as the shipped suite."""
    line = {"id": "tool-x", "kind": "tool", "prompt": "p", "tools": tools, "check": check, **extra}
    return parse_items([json.dumps(line)])[0]


def call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(name, json.dumps(arguments))


OSLO_IN_CELSIUS = make(
    {
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
    [FORECAST, WEATHER],
)
TWO_CITIES = make(
    {
        "type": "tool",
        "aspect": "arguments",
        "count": 2,
        "calls": [
            {"name": "get_weather", "arguments": {"location": {"match": "text", "value": "Rome"}}},
            {"name": "get_weather", "arguments": {"location": {"match": "text", "value": "Oslo"}}},
        ],
    },
    [WEATHER, FORECAST],
)
NO_CALL = make({"type": "tool", "aspect": "no_call", "answers": ["Ottawa"]}, [WEATHER, FORECAST])


class TestCalls:
    """A call is right when it names the expected tool with valid, expected arguments."""

    def test_right_tool_and_arguments(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [call("get_weather", location="Oslo", unit="celsius")])
        assert verdict.correct, verdict.detail

    def test_wrong_tool(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [call("get_forecast", location="Oslo", days=1)])
        assert (verdict.correct, verdict.detail) == (
            False,
            "called get_forecast, expected get_weather",
        )

    def test_tool_not_offered(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [call("get_time", location="Oslo")])
        assert (verdict.correct, verdict.detail) == (
            False,
            "called 'get_time', which is not offered",
        )

    def test_arguments_the_schema_refuses(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [call("get_weather", location="Oslo", unit="kelvin")])
        assert not verdict.correct
        assert verdict.detail.startswith("get_weather: unit: 'kelvin' is not one of")

    def test_missing_required_argument(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [call("get_weather", unit="celsius")])
        assert (verdict.correct, verdict.detail) == (
            False,
            "get_weather: 'location' is a required property",
        )

    def test_missing_constrained_optional_argument(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [call("get_weather", location="Oslo")])
        assert (verdict.correct, verdict.detail) == (False, "get_weather.unit: missing")

    def test_wrong_value(self) -> None:
        verdict = score(
            OSLO_IN_CELSIUS, "", [call("get_weather", location="Bergen", unit="celsius")]
        )
        assert (verdict.correct, verdict.detail) == (
            False,
            'get_weather.location: "Bergen" does not mention Oslo',
        )

    @pytest.mark.parametrize(
        "arguments",
        ['{"location": "Oslo"', "location=Oslo", '{"location": "Oslo", "days": NaN}'],
    )
    def test_malformed_arguments_json(self, arguments: str) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [ToolCall("get_weather", arguments)])
        assert (verdict.correct, verdict.detail) == (
            False,
            "get_weather: arguments are not valid JSON",
        )

    def test_arguments_that_are_not_an_object(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "", [ToolCall("get_weather", '["Oslo"]')])
        assert (verdict.correct, verdict.detail) == (
            False,
            "get_weather: arguments are not a JSON object",
        )

    def test_empty_arguments_text_is_an_empty_object(self) -> None:
        item = make(
            {"type": "tool", "aspect": "choose", "calls": [{"name": "list_alarms"}]}, [ALARMS]
        )
        assert score(item, "", [ToolCall("list_alarms", "")]).correct

    def test_no_call_where_one_is_expected(self) -> None:
        verdict = score(OSLO_IN_CELSIUS, "It is 12 degrees in Oslo.", [])
        assert (verdict.correct, verdict.detail) == (False, "no tool call")

    def test_an_extra_call_is_wrong(self) -> None:
        right = call("get_weather", location="Oslo", unit="celsius")
        verdict = score(OSLO_IN_CELSIUS, "", [right, right])
        assert (verdict.correct, verdict.detail) == (False, "2 calls, expected 1")


class TestParallel:
    """Several expected calls are matched one to one, in any order."""

    @pytest.mark.parametrize("cities", [("Rome", "Oslo"), ("Oslo", "Rome")])
    def test_both_calls_in_either_order(self, cities: tuple[str, str]) -> None:
        calls = [call("get_weather", location=city) for city in cities]
        assert score(TWO_CITIES, "", calls).correct

    def test_one_call_of_two(self) -> None:
        verdict = score(TWO_CITIES, "", [call("get_weather", location="Rome")])
        assert (verdict.correct, verdict.detail) == (False, "1 call, expected 2")

    def test_the_same_call_twice_does_not_cover_both(self) -> None:
        verdict = score(TWO_CITIES, "", [call("get_weather", location="Rome")] * 2)
        assert (verdict.correct, verdict.detail) == (
            False,
            "the calls do not cover every expected call",
        )

    def test_count_one_accepts_any_listed_call(self) -> None:
        check = {
            "type": "tool",
            "aspect": "choose",
            "calls": [
                {"name": "get_weather", "arguments": {"location": {"match": "present"}}},
                {"name": "get_forecast", "arguments": {"days": {"match": "exact", "value": 1}}},
            ],
        }
        item = make(check, [WEATHER, FORECAST])
        assert score(item, "", [call("get_forecast", location="Oslo", days=1)]).correct
        assert score(item, "", [call("get_weather", location="Oslo")]).correct


class TestNoCall:
    """Where no call is needed, any call is wrong and the text must hold an answer."""

    def test_direct_answer(self) -> None:
        assert score(NO_CALL, "The capital of Canada is Ottawa.", []).correct

    def test_any_call_is_wrong(self) -> None:
        verdict = score(NO_CALL, "Ottawa", [call("get_weather", location="Ottawa")])
        assert (verdict.correct, verdict.detail) == (False, "called get_weather; expected no call")

    def test_wrong_text(self) -> None:
        assert not score(NO_CALL, "It is Toronto.", []).correct


RESULT_TURNS = [
    {
        "role": "assistant",
        "tool_calls": [{"id": "call_1", "name": "get_weather", "arguments": {"location": "Oslo"}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18.5}'},
]


class TestResult:
    """After a tool result, the answer states its value or makes the next call."""

    ITEM = make(
        {"type": "tool", "aspect": "result", "answers": ["18.5"]},
        [WEATHER],
        messages=RESULT_TURNS,
    )
    NEXT_CALL = make(
        {
            "type": "tool",
            "aspect": "result",
            "calls": [
                {"name": "get_forecast", "arguments": {"days": {"match": "number", "value": 3}}}
            ],
        },
        [WEATHER, FORECAST],
        messages=RESULT_TURNS,
    )

    def test_text_with_the_value(self) -> None:
        assert score(self.ITEM, "It's 18.5°C in Oslo right now.", []).correct

    def test_text_with_another_value(self) -> None:
        assert not score(self.ITEM, "It's about 19°C in Oslo.", []).correct

    def test_calling_again_instead_of_answering(self) -> None:
        assert not score(self.ITEM, "18.5", [call("get_weather", location="Oslo")]).correct

    def test_the_second_call(self) -> None:
        assert score(self.NEXT_CALL, "", [call("get_forecast", location="Oslo", days=3)]).correct

    def test_a_second_call_with_the_wrong_value(self) -> None:
        verdict = score(self.NEXT_CALL, "", [call("get_forecast", location="Oslo", days=7)])
        assert (verdict.correct, verdict.detail) == (
            False,
            "get_forecast.days: 7, expected 3 (within 0)",
        )


NESTED = make(
    {
        "type": "tool",
        "aspect": "arguments",
        "calls": [
            {
                "name": "place_order",
                "arguments": {
                    "items.0.sku": {"match": "exact", "value": "KB-1"},
                    "shipping.address.city": {"match": "text", "value": "Paris"},
                },
            }
        ],
    },
    [ORDER],
)


class TestNested:
    """Dotted paths reach into objects and arrays."""

    def test_nested_values_match(self) -> None:
        arguments = {
            "items": [{"sku": "KB-1", "quantity": 2}],
            "shipping": {"method": "express", "address": {"city": "Paris, France"}},
        }
        assert score(NESTED, "", [call("place_order", **arguments)]).correct

    def test_missing_nested_value(self) -> None:
        arguments = {"items": [{"sku": "KB-1", "quantity": 2}], "shipping": {"method": "express"}}
        verdict = score(NESTED, "", [call("place_order", **arguments)])
        assert (verdict.correct, verdict.detail) == (
            False,
            "place_order.shipping.address.city: missing",
        )

    def test_nested_schema_violation(self) -> None:
        arguments = {"items": [{"sku": "KB-1"}]}
        verdict = score(NESTED, "", [call("place_order", **arguments)])
        assert (verdict.correct, verdict.detail) == (
            False,
            "place_order: items[0]: 'quantity' is a required property",
        )


class TestConstraints:
    """Each argument constraint accepts what it should and nothing else."""

    @given(offset=st.floats(min_value=-0.5, max_value=0.5))
    def test_number_within_tolerance(self, offset: float) -> None:
        assert arg_problem(Number(12.0, tol=0.5), 12.0 + offset) is None

    @given(
        offset=st.floats(min_value=0.51, max_value=1e6) | st.floats(min_value=-1e6, max_value=-0.51)
    )
    def test_number_outside_tolerance(self, offset: float) -> None:
        assert arg_problem(Number(12.0, tol=0.5), 12.0 + offset) is not None

    @pytest.mark.parametrize("value", [True, "12", None, [12]])
    def test_number_refuses_non_numbers(self, value: Any) -> None:
        assert arg_problem(Number(12.0), value) is not None

    @pytest.mark.parametrize("value", ["OSLO", "oslo, Norway", "Oslo!", "the city of Oslo"])
    def test_text_ignores_case_and_punctuation(self, value: str) -> None:
        assert arg_problem(Text("Oslo"), value) is None

    @pytest.mark.parametrize("value", ["Oslofjord", "Bergen", 3])
    def test_text_needs_the_whole_word_in_a_string(self, value: Any) -> None:
        assert arg_problem(Text(("Oslo", "Christiania")), value) is not None

    def test_exact_is_json_equality(self) -> None:
        assert arg_problem(Exact(3), 3.0) is None
        assert arg_problem(Exact(True), 1) is not None
        assert arg_problem(Exact("celsius"), "Celsius") is not None

    def test_one_of(self) -> None:
        check = OneOf(("20:30", "21:15"))
        assert arg_problem(check, "21:15") is None
        assert arg_problem(check, "17:45") is not None

    @given(value=st.none() | st.booleans() | st.integers() | st.text())
    def test_present_accepts_any_value(self, value: Any) -> None:
        assert arg_problem(Present(), value) is None

    @given(
        value=st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(),
            lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
        )
    )
    def test_same_matches_a_json_round_trip(self, value: Any) -> None:
        assert same(value, json.loads(json.dumps(value)))
