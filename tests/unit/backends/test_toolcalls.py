"""Tests for backends.toolcalls*: calls written as text, streamed, normalised, checked, forced."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from itertools import count, pairwise
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk

from backends.toolcalls import (
    HOLD_LIMIT,
    Call,
    Parsed,
    Start,
    Tool,
    parse_calls,
    start_of,
    tools_of,
)
from backends.toolcalls_messages import calls_text, hermes_text, messages_for, tools_prompt
from backends.toolcalls_plan import plan_for, template_style, tool_choice_of
from backends.toolcalls_schema import argument_errors, call_errors, call_schema
from backends.toolcalls_stream import (
    CallDetector,
    DeltaNormalizer,
    ToolCallStream,
    call_deltas,
    new_call_id,
)

WEATHER = Tool(
    "get_weather",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "unit": {"type": "string", "enum": ["c", "f"]},
        },
        "required": ["city"],
    },
)
SEARCH = Tool("search", {"type": "object", "properties": {"q": {"type": "string"}}})
TOOLS = (WEATHER, SEARCH)
CALL_ID = re.compile(r"call_[0-9a-f]{24}")


def ids() -> Callable[[], str]:
    """Predictable call ids for assertions: ``call_0``, ``call_1``, ..."""
    counter = count()
    return lambda: f"call_{next(counter)}"


def weather(city: str = "Paris") -> Call:
    return Call("get_weather", json.dumps({"city": city}, separators=(",", ":")))


# --- strategies -----------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,11}", fullmatch=True)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
calls_lists = st.lists(
    st.tuples(names, arguments).map(
        lambda pair: Call(pair[0], json.dumps(pair[1], separators=(",", ":"), ensure_ascii=False))
    ),
    min_size=1,
    max_size=4,
)


def obj(call: Call, key: str = "arguments") -> dict[str, Any]:
    return {"name": call.name, key: json.loads(call.arguments)}


RENDERERS: dict[str, Callable[[list[Call]], str]] = {
    "hermes": lambda cs: "\n".join(f"<tool_call>\n{json.dumps(obj(c))}\n</tool_call>" for c in cs),
    "hermes_unclosed": lambda cs: "".join(f"<tool_call>\n{json.dumps(obj(c))}\n" for c in cs),
    "bare_lines": lambda cs: "\n".join(json.dumps(obj(c)) for c in cs),
    "bare_array": lambda cs: json.dumps([obj(c) for c in cs], indent=2),
    "fenced": lambda cs: "```json\n" + json.dumps([obj(c) for c in cs]) + "\n```",
    "fenced_each": lambda cs: "\n".join(f"```\n{json.dumps(obj(c))}\n```" for c in cs),
    "string_arguments": lambda cs: "\n".join(
        json.dumps({"name": c.name, "arguments": c.arguments}) for c in cs
    ),
    "llama3": lambda cs: "<|python_tag|>" + "; ".join(json.dumps(obj(c, "parameters")) for c in cs),
    "mistral_array": lambda cs: "[TOOL_CALLS] " + json.dumps([obj(c) for c in cs]),
    "mistral_args": lambda cs: "".join(
        f"[TOOL_CALLS]{c.name}[ARGS]{json.dumps(json.loads(c.arguments))}" for c in cs
    ),
    "openai_wrapper": lambda cs: json.dumps([{"type": "function", "function": obj(c)} for c in cs]),
}


def tools_for(calls: list[Call]) -> tuple[Tool, ...]:
    return tuple(Tool(name) for name in {c.name for c in calls})


def split(text: str, cuts: list[int]) -> list[str]:
    """``text`` cut at the given positions (taken modulo its length)."""
    points = sorted({c % (len(text) + 1) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in pairwise(points)]


def detect(pieces: list[str], tools: tuple[Tool, ...]) -> tuple[str, tuple[Call, ...]]:
    """Everything a detector emits for ``pieces``, as text and calls."""
    detector = CallDetector(tools)
    emitted = "".join(detector.feed(piece) for piece in pieces)
    text, calls = detector.finish()
    return emitted + text, calls


# --- tools_of -------------------------------------------------------------------------------


class TestToolsOf:
    def test_reads_function_tools(self) -> None:
        """Each function tool gives its name, parameters and description."""
        body = {
            "tools": [
                {
                    "type": "function",
                    "function": {"name": "f", "description": "does f", "parameters": {"a": 1}},
                }
            ]
        }
        assert tools_of(body) == (Tool("f", {"a": 1}, "does f"),)

    def test_missing_parameters_mean_an_empty_object(self) -> None:
        """A tool without parameters takes an object with no properties."""
        (tool,) = tools_of({"tools": [{"type": "function", "function": {"name": "f"}}]})
        assert tool.parameters == {"type": "object", "properties": {}}

    def test_malformed_entries_are_skipped(self) -> None:
        """Entries that are not named function tools are ignored."""
        body = {"tools": [1, {"type": "retrieval"}, {"type": "function", "function": {}}]}
        assert tools_of(body) == ()

    def test_no_tools(self) -> None:
        """A request without tools offers none."""
        assert tools_of({"messages": []}) == ()


# --- start_of -------------------------------------------------------------------------------


class TestStartOf:
    @pytest.mark.parametrize(
        "text",
        ['{"name"', ' \n [ {"arguments"', '```json\n{"name"', "<tool_call>", "[TOOL_CALLS]x"],
    )
    def test_call_starts(self, text: str) -> None:
        """Call openings are recognised as soon as they are unambiguous."""
        assert start_of(text) is Start.CALL

    @pytest.mark.parametrize("text", ["Hello", '{"answer"', "```python", "```\ndef", "<p>", "[1"])
    def test_text_starts(self, text: str) -> None:
        """Prose, other JSON and code fences are text from their first telling character."""
        assert start_of(text) is Start.TEXT

    @pytest.mark.parametrize("text", ["", "  ", "{", '{"na', "```", "```js", "<tool", "[TOOL"])
    def test_undecided_starts(self, text: str) -> None:
        """A beginning that could still go either way waits."""
        assert start_of(text) is Start.WAIT

    def test_undecided_after_the_limit_is_text(self) -> None:
        """Whitespace up to the limit does not keep an answer undecided forever."""
        assert start_of(" " * HOLD_LIMIT + '{"name"') is Start.TEXT

    @given(st.text(alphabet='{}[]"` \nnamejso<tool_cl>|TOOLS_CALpyth', max_size=80), st.text())
    def test_verdicts_are_monotone(self, head: str, tail: str) -> None:
        """Once told, a longer answer with the same beginning gets the same verdict."""
        verdict = start_of(head)
        if verdict is not Start.WAIT:
            assert start_of(head + tail) is verdict


# --- parse_calls ----------------------------------------------------------------------------


class TestParseCalls:
    def test_bare_object(self) -> None:
        """A bare JSON object naming a tool is a call."""
        text = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
        assert parse_calls(text, TOOLS) == Parsed((weather(),), "")

    def test_fenced_object_with_trailing_prose(self) -> None:
        """A ```json fence is unwrapped; the prose after it is content."""
        text = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\nDone.'
        assert parse_calls(text, TOOLS) == Parsed((weather(),), "\nDone.")

    def test_hermes_blocks_with_content_before(self) -> None:
        """Several ``<tool_call>`` blocks give several calls; text before them is content."""
        text = (
            "Let me check.\n<tool_call>\n"
            '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
            '<tool_call>\n{"name": "search", "arguments": {"q": "x"}}\n</tool_call>'
        )
        parsed = parse_calls(text, TOOLS)
        assert parsed is not None
        assert parsed.calls == (weather(), Call("search", '{"q":"x"}'))
        assert parsed.content.strip() == "Let me check."

    def test_unclosed_hermes_block(self) -> None:
        """A last ``<tool_call>`` cut off before its closing tag still counts."""
        text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
        assert parse_calls(text, TOOLS) == Parsed((weather(),), "")

    def test_arguments_as_a_json_string(self) -> None:
        """Arguments written as a JSON string holding an object are decoded."""
        text = '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}'
        assert parse_calls(text, TOOLS) == Parsed((weather(),), "")

    def test_llama3_python_tag_with_semicolons(self) -> None:
        """Llama 3.x calls after ``<|python_tag|>`` use ``parameters`` and ``;`` separators."""
        text = (
            '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}; '
            '{"name": "search", "parameters": {}}'
        )
        parsed = parse_calls(text, TOOLS)
        assert parsed is not None
        assert parsed.calls == (weather(), Call("search", "{}"))

    def test_mistral_name_args_form(self) -> None:
        """Mistral's ``[TOOL_CALLS]name[ARGS]{...}`` form, repeated, with an optional call id."""
        text = '[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]search[CALL_ID]a1[ARGS]{}'
        parsed = parse_calls(text, TOOLS)
        assert parsed is not None
        assert parsed.calls == (weather(), Call("search", "{}"))

    def test_prose_is_not_a_call(self) -> None:
        """Ordinary prose holds no calls."""
        assert parse_calls("The weather in Paris is mild.", TOOLS) is None

    def test_json_not_naming_a_tool_is_not_a_call(self) -> None:
        """JSON that names no offered tool is an ordinary answer."""
        assert parse_calls('{"name": "Bob", "arguments": {}}', TOOLS) is None
        assert parse_calls('{"city": "Paris"}', TOOLS) is None

    def test_bare_json_after_prose_is_not_a_call(self) -> None:
        """Bare JSON counts only at the start of the answer, as in a stream."""
        text = 'Call it like {"name": "get_weather", "arguments": {}}'
        assert parse_calls(text, TOOLS) is None

    def test_malformed_marked_call_makes_it_all_text(self) -> None:
        """A marker followed by something that is not a call leaves the answer as text."""
        text = '<tool_call>{"name": "get_weather", "arguments": {"city": </tool_call>'
        assert parse_calls(text, TOOLS) is None

    def test_non_object_arguments_are_not_a_call(self) -> None:
        """Arguments must be a JSON object."""
        assert parse_calls('{"name": "search", "arguments": "Paris"}', TOOLS) is None

    def test_fence_inside_an_argument_string(self) -> None:
        """A code fence inside an argument does not end the fence around the call."""
        call = {"name": "search", "arguments": {"q": "```x```"}}
        text = "```json\n" + json.dumps(call) + "\n```"
        parsed = parse_calls(text, TOOLS)
        assert parsed is not None
        assert parsed.calls == (Call("search", '{"q":"```x```"}'),)

    @given(calls_lists, st.sampled_from(sorted(RENDERERS)))
    def test_every_format_round_trips(self, calls: list[Call], fmt: str) -> None:
        """Any list of calls written in any supported format parses back to the same calls."""
        parsed = parse_calls(RENDERERS[fmt](calls), tools_for(calls))
        assert parsed is not None
        assert parsed.calls == tuple(calls)
        assert parsed.content.strip() == ""

    @given(calls_lists, st.sampled_from(["hermes", "llama3", "mistral_args"]), st.text(max_size=30))
    def test_marked_calls_after_prose(self, calls: list[Call], fmt: str, prose: str) -> None:
        """Marked calls are found after any prose, which stays content."""
        prose = re.sub(r"[<\[]", "", prose)
        parsed = parse_calls(prose + RENDERERS[fmt](calls), tools_for(calls))
        assert parsed is not None
        assert parsed.calls == tuple(calls)
        assert parsed.content.startswith(prose)


# --- CallDetector ---------------------------------------------------------------------------

fragments = st.sampled_from(
    ["a", " ", "\n", "\xa0", "{", "}", '"', "[", "]", ":", ",", ";", "`", "<", "|", "```json\n",
     '"name"', '"get_weather"', '"arguments"', "<tool_call>", "</tool_call>", "[TOOL_CALLS]",
     "<|python_tag|>", "[ARGS]", "get_weather", '{"name": "search", "arguments": {}}']
)  # fmt: skip
texts = st.lists(fragments, max_size=30).map("".join)


class TestCallDetector:
    def test_prose_streams_at_once(self) -> None:
        """Prose is passed on from its first character."""
        detector = CallDetector(TOOLS)
        assert detector.feed("Hello") == "Hello"
        assert detector.feed(" world") == " world"
        assert detector.finish() == ("", ())

    def test_call_is_buffered_and_parsed_at_the_end(self) -> None:
        """A call's text is not emitted; its calls come out at the end."""
        detector = CallDetector(TOOLS)
        pieces = ['{"name": ', '"get_weather", "arguments": ', '{"city": "Paris"}}']
        assert [detector.feed(p) for p in pieces] == ["", "", ""]
        assert detector.finish() == ("", (weather(),))

    def test_late_marker_split_across_pieces(self) -> None:
        """Text streams until a marker, even one split over pieces; the rest is calls."""
        detector = CallDetector(TOOLS)
        out = [detector.feed(p) for p in ["Sure. <tool", "_call>", '{"name": "search", ']]
        out.append(detector.feed('"arguments": {}}</tool_call>'))
        assert "".join(out) == "Sure. "
        assert detector.finish() == ("", (Call("search", "{}"),))

    def test_json_answer_falls_back_to_text(self) -> None:
        """Buffered text that is not a call after all comes out whole at the end."""
        detector = CallDetector(TOOLS)
        assert detector.feed('{"name": "Bob", ') == ""
        assert detector.finish() == ('{"name": "Bob", ', ())

    @given(texts, st.lists(st.integers(min_value=0), max_size=8))
    def test_result_does_not_depend_on_the_split(self, text: str, cuts: list[int]) -> None:
        """However the text is cut into pieces, the emitted text and calls are the same."""
        assert detect(split(text, cuts), TOOLS) == detect([text], TOOLS)

    @given(texts)
    def test_agrees_with_parse_calls(self, text: str) -> None:
        """A streamed answer gives what parsing the whole answer gives."""
        parsed = parse_calls(text, TOOLS)
        expected = (text, ()) if parsed is None else (parsed.content, parsed.calls)
        assert detect(list(text), TOOLS) == expected

    @given(texts, st.lists(st.integers(min_value=0), max_size=8))
    def test_holds_at_most_the_bound(self, text: str, cuts: list[int]) -> None:
        """Unless buffering a call, the detector never holds more than ``HOLD_LIMIT`` chars."""
        detector = CallDetector(TOOLS)
        fed = emitted = 0
        for piece in split(text, cuts):
            emitted += len(detector.feed(piece))
            fed += len(piece)
            assert detector.buffering or fed - emitted <= HOLD_LIMIT

    @given(calls_lists, st.sampled_from(sorted(RENDERERS)), st.lists(st.integers(0), max_size=6))
    def test_streamed_calls_round_trip(self, calls: list[Call], fmt: str, cuts: list[int]) -> None:
        """Calls in any format, streamed in any pieces, are found."""
        text = RENDERERS[fmt](calls)
        assert detect(split(text, cuts), tools_for(calls))[1] == tuple(calls)


# --- DeltaNormalizer, call_deltas -----------------------------------------------------------


def llama_cpp_deltas(call: Call, pieces: list[str], index: int = 0) -> Iterator[dict[str, Any]]:
    """What llama_cpp.server streams for a named call: name and id repeated in every delta."""
    for piece in pieces:
        yield {
            "index": index,
            "id": f"call__0_{call.name}_cmpl-1",
            "type": "function",
            "function": {"name": call.name, "arguments": piece},
        }


class TestDeltaNormalizer:
    def test_name_and_id_only_in_the_first_delta(self) -> None:
        """A repeated name and node id become one OpenAI first delta and argument fragments."""
        normalizer = DeltaNormalizer(new_id=ids())
        out = normalizer.feed(llama_cpp_deltas(weather(), ['{"city":', '"Paris"}']))
        assert out == [
            {
                "index": 0,
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":'},
            },
            {"index": 0, "function": {"arguments": '"Paris"}'}},
        ]

    def test_missing_index_continues_the_current_call(self) -> None:
        """Deltas without index or id extend the call in progress."""
        normalizer = DeltaNormalizer(new_id=ids())
        normalizer.feed([{"function": {"name": "search", "arguments": '{"q"'}}])
        normalizer.feed([{"function": {"name": "search", "arguments": ':"x"}'}}])
        assert normalizer.calls() == (Call("search", '{"q":"x"}'),)

    def test_new_id_after_complete_arguments_starts_a_call(self) -> None:
        """Without indexes, a new id after complete arguments is the next call."""
        normalizer = DeltaNormalizer(new_id=ids())
        normalizer.feed([{"id": "a", "function": {"name": "search", "arguments": "{}"}}])
        out = normalizer.feed([{"id": "b", "function": {"name": "search", "arguments": "{}"}}])
        assert out[0]["index"] == 1
        assert normalizer.calls() == (Call("search", "{}"), Call("search", "{}"))

    def test_varying_ids_with_one_index_are_one_call(self) -> None:
        """An index wins over ids that change from delta to delta."""
        normalizer = DeltaNormalizer(new_id=ids())
        normalizer.feed([{"index": 0, "id": "x1", "function": {"name": "search"}}])
        normalizer.feed([{"index": 0, "id": "x2", "function": {"arguments": "{}"}}])
        assert normalizer.calls() == (Call("search", "{}"),)

    def test_arguments_before_the_name_are_held(self) -> None:
        """Fragments that arrive before the call's name go out with its first delta."""
        normalizer = DeltaNormalizer(new_id=ids())
        assert normalizer.feed([{"index": 0, "function": {"arguments": "{"}}]) == []
        (first,) = normalizer.feed([{"index": 0, "function": {"name": "search", "arguments": "}"}}])
        assert first["function"] == {"name": "search", "arguments": "{}"}

    def test_default_ids_are_openai_shaped(self) -> None:
        """Generated ids are ``call_`` and 24 hex digits."""
        assert CALL_ID.fullmatch(new_call_id())

    @given(calls_lists, st.data())
    def test_fragments_concatenate_to_the_arguments(self, calls: list[Call], data: Any) -> None:
        """Per call: one name, one id, and fragments that join to valid JSON arguments."""
        normalizer = DeltaNormalizer()
        out: list[dict[str, Any]] = []
        for index, call in enumerate(calls):
            cuts = data.draw(st.lists(st.integers(0), max_size=5))
            out += normalizer.feed(llama_cpp_deltas(call, split(call.arguments, cuts), index))
        for index, call in enumerate(calls):
            mine = [d for d in out if d["index"] == index]
            assert [d["function"].get("name") for d in mine if "name" in d["function"]] == [
                call.name
            ]
            assert CALL_ID.fullmatch(mine[0]["id"]) and all("id" not in d for d in mine[1:])
            joined = "".join(d["function"]["arguments"] for d in mine)
            assert json.loads(joined) == json.loads(call.arguments)


class TestFinishedCalls:
    def test_call_deltas(self) -> None:
        """Finished calls become one complete delta each, indexed from ``first_index``."""
        assert call_deltas([weather()], first_index=2, new_id=ids()) == [
            {
                "index": 2,
                "id": "call_0",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            }
        ]


# --- ToolCallStream ---------------------------------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "/m.gguf",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def run(stream: ToolCallStream, chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = [c for node_chunk in chunks for c in stream.feed(node_chunk)]
    return out + stream.close()


def deltas_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in chunks]


class TestToolCallStream:
    def test_call_in_content_becomes_tool_calls(self) -> None:
        """A call written as content is sent as tool_calls with finish_reason tool_calls."""
        stream = ToolCallStream(TOOLS, new_id=ids())
        pieces = ['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}']
        contents = [chunk({"content": p}) for p in pieces]
        out = run(stream, [chunk({"role": "assistant"}), *contents, chunk({}, "stop")])
        assert deltas_of(out)[0] == {"role": "assistant"}
        assert deltas_of(out)[1]["tool_calls"][0]["function"]["name"] == "get_weather"
        assert all("content" not in d for d in deltas_of(out))
        assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"

    def test_prose_passes_through(self) -> None:
        """Plain text streams unchanged and keeps its finish reason."""
        stream = ToolCallStream(TOOLS)
        out = run(stream, [chunk({"content": "Hi"}), chunk({"content": " there"}, "stop")])
        assert [d.get("content") for d in deltas_of(out)] == ["Hi", " there", None]
        assert out[-1]["choices"][0]["finish_reason"] == "stop"

    def test_llama_cpp_named_stream_is_repaired(self) -> None:
        """llama_cpp.server's repeated names and legacy function_call are cleaned up."""
        stream = ToolCallStream(TOOLS, new_id=ids())
        first = {"role": "assistant", "content": None, "function_call": None, "tool_calls": None}
        parts = [
            chunk({"tool_calls": [d], "function_call": d["function"]})
            for d in llama_cpp_deltas(weather(), ['{"city"', ':"Paris"}'])
        ]
        out = run(stream, [chunk(first), *parts, chunk({"tool_calls": None}, "tool_calls")])
        calls = [c for d in deltas_of(out) for c in d.get("tool_calls", [])]
        assert [c["function"].get("name") for c in calls] == ["get_weather", None]
        assert all("function_call" not in d for d in deltas_of(out))

    @given(calls_lists, st.lists(st.integers(0), max_size=6))
    def test_the_sdk_reads_the_calls(self, calls: list[Call], cuts: list[int]) -> None:
        """The OpenAI SDK assembles the rewritten stream into the calls written as text."""
        text = RENDERERS["hermes"](calls)
        stream = ToolCallStream(tools_for(calls))
        node = [chunk({"role": "assistant"}), *(chunk({"content": p}) for p in split(text, cuts))]
        state = ChatCompletionStreamState()
        for out in run(stream, [*node, chunk({}, "stop")]):
            state.handle_chunk(ChatCompletionChunk.model_validate(out))
        choice = state.get_final_completion().choices[0]
        assert choice.finish_reason == "tool_calls" and not choice.message.content
        got = [(c.function.name, c.function.arguments) for c in choice.message.tool_calls or []]
        assert got == [(c.name, c.arguments) for c in calls]

    def test_cut_stream_releases_held_text(self) -> None:
        """A stream cut before its finish chunk still hands on what was held."""
        stream = ToolCallStream(TOOLS)
        assert stream.feed(chunk({"content": '{"name": "Bob"'})) == []
        (out,) = stream.close()
        assert out["id"] == "chatcmpl-1"
        assert out["choices"][0]["delta"] == {"content": '{"name": "Bob"'}

    def test_usage_chunk_passes_unchanged(self) -> None:
        """A chunk without choices is relayed as it is."""
        usage = {"id": "x", "choices": [], "usage": {"total_tokens": 3}}
        assert ToolCallStream(TOOLS).feed(usage) == [usage]


# --- argument_errors, call_schema -----------------------------------------------------------


class TestArgumentErrors:
    def test_valid_arguments(self) -> None:
        """Arguments that fit the schema have no errors."""
        assert argument_errors('{"city": "Paris", "unit": "c"}', WEATHER.parameters) == []

    def test_invalid_json(self) -> None:
        """Arguments that are not JSON are one error saying so."""
        (error,) = argument_errors('{"city": ', WEATHER.parameters)
        assert error.startswith("arguments are not valid JSON")

    def test_not_an_object(self) -> None:
        """Arguments must be an object whatever the schema says."""
        assert argument_errors("[1]", {}) == ["arguments must be a JSON object, not an array"]

    def test_errors_name_where_and_what(self) -> None:
        """Each error names the place and the problem, in document order."""
        assert argument_errors('{"unit": "k"}', WEATHER.parameters) == [
            "arguments: 'city' is a required property",
            "arguments.unit: 'k' is not one of ['c', 'f']",
        ]

    def test_draft_is_taken_from_the_schema(self) -> None:
        """A ``$schema`` naming draft 4 is validated as draft 4 (boolean exclusiveMaximum)."""
        schema = {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "properties": {"n": {"maximum": 3, "exclusiveMaximum": True}},
        }
        assert argument_errors('{"n": 3}', schema) != []

    def test_invalid_schema(self) -> None:
        """A broken parameters schema is reported, not raised."""
        (error,) = argument_errors("{}", {"type": 5})
        assert error.startswith("the tool's parameters schema is invalid")

    def test_unknown_tool(self) -> None:
        """A call to a tool that is not offered names the tools that are."""
        assert call_errors(Call("nope"), TOOLS) == [
            "there is no tool named 'nope'; the tools are: get_weather, search"
        ]


class TestCallSchema:
    def test_named_call(self) -> None:
        """The schema for one tool takes its calls and refuses other names or extra keys."""
        validator = jsonschema.Draft202012Validator(call_schema(TOOLS, only="search"))
        assert validator.is_valid({"name": "search", "arguments": {"q": "x"}})
        assert not validator.is_valid({"name": "get_weather", "arguments": {"city": "P"}})
        assert not validator.is_valid({"name": "search", "arguments": {}, "x": 1})

    def test_any_tool(self) -> None:
        """Without ``only`` any offered tool may be called, with its own arguments."""
        validator = jsonschema.Draft202012Validator(call_schema(TOOLS))
        assert validator.is_valid({"name": "get_weather", "arguments": {"city": "P"}})
        assert not validator.is_valid({"name": "get_weather", "arguments": {}})

    def test_parallel_is_a_non_empty_array(self) -> None:
        """With ``parallel`` the schema takes one or more calls in an array."""
        validator = jsonschema.Draft202012Validator(call_schema(TOOLS, parallel=True))
        assert validator.is_valid([{"name": "search", "arguments": {}}] * 2)
        assert not validator.is_valid([])

    def test_local_refs_are_rebased(self) -> None:
        """A tool's own ``$defs`` and recursive ``#`` references still resolve."""
        tree = Tool(
            "tree",
            {
                "$defs": {"leaf": {"type": "integer"}},
                "type": "object",
                "properties": {"leaf": {"$ref": "#/$defs/leaf"}, "child": {"$ref": "#"}},
            },
        )
        validator = jsonschema.Draft202012Validator(call_schema((tree,)))
        assert validator.is_valid({"name": "tree", "arguments": {"child": {"leaf": 1}}})
        assert not validator.is_valid({"name": "tree", "arguments": {"child": {"leaf": "x"}}})

    def test_unknown_name_raises(self) -> None:
        """Forcing a tool that is not offered is a programming error."""
        with pytest.raises(ValueError, match="no tool named"):
            call_schema(TOOLS, only="nope")

    @given(calls_lists)
    def test_forced_output_parses_as_calls(self, calls: list[Call]) -> None:
        """Output that fits the schema is recognised by ``parse_calls``."""
        tools = tools_for(calls)
        validator = jsonschema.Draft202012Validator(call_schema(tools, parallel=True))
        output = [obj(c) for c in calls]
        assert validator.is_valid(output)
        parsed = parse_calls(json.dumps(output), tools)
        assert parsed is not None and parsed.calls == tuple(calls)


# --- messages_for ---------------------------------------------------------------------------

CONVERSATION: list[dict[str, Any]] = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_a",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_a", "content": "18 C"},
]


class TestMessagesFor:
    def test_known_tools_get_string_content(self) -> None:
        """For tool-aware templates, null content becomes an empty string; calls stay."""
        out = messages_for(CONVERSATION, template_knows_tools=True)
        assert out[1]["content"] == ""
        assert out[1]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
        assert out[2] == CONVERSATION[2]

    def test_object_arguments_become_strings(self) -> None:
        """Arguments sent as objects are passed on as JSON strings."""
        message = {
            "role": "assistant",
            "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": {"a": 1}}}],
        }
        (out,) = messages_for([message], template_knows_tools=True)
        assert out["tool_calls"][0]["function"]["arguments"] == '{"a":1}'

    def test_hermes_calls_are_written_as_the_template_would(self) -> None:
        """With ``hermes_calls`` the turn reads as Qwen's template renders object arguments."""
        out = messages_for(CONVERSATION, template_knows_tools=True, hermes_calls=True)
        assert out[1] == {
            "role": "assistant",
            "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}'
            "\n</tool_call>",
        }

    def test_unknown_tools_become_text(self) -> None:
        """For templates without tools, calls are JSON text and results user messages."""
        out = messages_for(CONVERSATION, template_knows_tools=False)
        assert out[1] == {
            "role": "assistant",
            "content": '{"name":"get_weather","arguments":{"city":"Paris"}}',
        }
        assert out[2] == {"role": "user", "content": "Tool result (get_weather): 18 C"}

    def test_tools_are_described_in_the_system_message(self) -> None:
        """Without template support the tools are appended to the system prompt."""
        system = {"role": "system", "content": "Be brief."}
        out = messages_for([system], template_knows_tools=False, tools=TOOLS)
        assert out[0]["content"] == "Be brief.\n\n" + tools_prompt(TOOLS)

    def test_input_is_not_changed(self) -> None:
        """Rewriting returns new messages and leaves the caller's untouched."""
        before = json.dumps(CONVERSATION)
        messages_for(CONVERSATION, template_knows_tools=False, tools=TOOLS)
        messages_for(CONVERSATION, template_knows_tools=True, hermes_calls=True)
        assert json.dumps(CONVERSATION) == before

    @given(calls_lists, st.text(max_size=20).filter(lambda s: not s.strip()))
    def test_text_calls_parse_back(self, calls: list[Call], content: str) -> None:
        """Calls written as text for either kind of template are found by ``parse_calls``."""
        for text in (calls_text(content, calls), hermes_text(content, calls)):
            parsed = parse_calls(text, tools_for(calls))
            assert parsed is not None and parsed.calls == tuple(calls)


# --- plan_for -------------------------------------------------------------------------------


def request(choice: Any = None, **extra: Any) -> dict[str, Any]:
    """A client request offering the two tools, with an optional ``tool_choice``."""
    tools = [
        {"type": "function", "function": {"name": t.name, "parameters": dict(t.parameters)}}
        for t in TOOLS
    ]
    body: dict[str, Any] = {"messages": list(CONVERSATION), "tools": tools, **extra}
    if choice is not None:
        body["tool_choice"] = choice
    return body


NAMED = {"type": "function", "function": {"name": "search"}}


class TestToolChoice:
    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({}, ("none", None)),
            (request(), ("auto", None)),
            (request("required"), ("required", None)),
            (request(NAMED), ("named", "search")),
            (request({"type": "function"}), ("auto", None)),
        ],
    )
    def test_choices(self, body: dict[str, Any], expected: tuple[str, str | None]) -> None:
        """OpenAI's defaults apply: auto with tools, none without."""
        assert tool_choice_of(body) == expected

    @pytest.mark.parametrize(
        ("template", "style"),
        [("<tool_call>{{ tools }}", "hermes"), ("{% if tools %}", "tools"), ("{{ m }}", "none")],
    )
    def test_template_style(self, template: str, style: str) -> None:
        """Templates are told apart by their tool markup."""
        assert template_style(template) == style


class TestPlanFor:
    def test_none_drops_the_tools(self) -> None:
        """With ``tool_choice: none`` the node sees no tools and no parsing is done."""
        plan = plan_for(request("none", parallel_tool_calls=True), "llama_server")
        assert not {"tools", "tool_choice", "parallel_tool_calls"} & set(plan.body)
        assert not plan.parse_text and not plan.must_call

    def test_auto_on_llama_cpp_server(self) -> None:
        """llama_cpp.server gets the tools for its template and calls are read from text."""
        plan = plan_for(request("auto"), "llama_cpp_server")
        assert [t["function"]["name"] for t in plan.body["tools"]] == ["get_weather", "search"]
        assert "tool_choice" not in plan.body and plan.parse_text and not plan.must_call

    def test_required_on_llama_cpp_server_uses_a_schema(self) -> None:
        """llama_cpp.server ignores ``required``, so the call is forced by a JSON schema."""
        plan = plan_for(request("required", parallel_tool_calls=False), "llama_cpp_server")
        assert plan.body["response_format"] == {
            "type": "json_object",
            "schema": call_schema(TOOLS),
        }
        assert plan.must_call and "tool_choice" not in plan.body

    def test_named_on_llama_cpp_server_is_its_own(self) -> None:
        """llama_cpp.server forces a named call itself."""
        plan = plan_for(request(NAMED), "llama_cpp_server")
        assert plan.body["tool_choice"] == NAMED and plan.only == "search"

    def test_required_on_llama_server_uses_a_schema(self) -> None:
        """Native llama-server's own ``required`` lets text run first, so a schema forces it."""
        plan = plan_for(request("required"), "llama_server")
        assert plan.body["response_format"] == {
            "type": "json_schema",
            "json_schema": {"name": "tool_calls", "schema": call_schema(TOOLS, parallel=True)},
        }
        assert "tool_choice" not in plan.body and len(plan.body["tools"]) == 2

    def test_named_on_llama_server_uses_that_tools_schema(self) -> None:
        """Native llama-server reads a named choice as auto, so the one tool's schema is used."""
        plan = plan_for(request(NAMED), "llama_server")
        schema = plan.body["response_format"]["json_schema"]["schema"]
        assert schema == call_schema(TOOLS, only="search")
        assert plan.must_call and plan.only == "search"

    def test_template_without_tools_gets_a_prompt_and_a_schema(self) -> None:
        """Without template support, tools go to the system prompt and calls are forced."""
        plan = plan_for(request(NAMED), "llama_server", style="none")
        assert "tools" not in plan.body
        assert plan.body["messages"][0] == {"role": "system", "content": tools_prompt(TOOLS)}
        schema = plan.body["response_format"]["json_schema"]["schema"]
        assert schema == call_schema(TOOLS, only="search")

    def test_hermes_history_on_llama_cpp_server(self) -> None:
        """Earlier calls are written as Hermes text for llama_cpp.server with a Qwen template."""
        plan = plan_for(request(), "llama_cpp_server")
        assert plan.body["messages"][1]["content"].startswith("<tool_call>")

    def test_unknown_named_tool_is_required(self) -> None:
        """A named tool that is not offered falls back to any tool being required."""
        plan = plan_for(request({"type": "function", "function": {"name": "x"}}), "llama_server")
        schema = plan.body["response_format"]["json_schema"]["schema"]
        assert schema == call_schema(TOOLS, parallel=True) and plan.only is None
