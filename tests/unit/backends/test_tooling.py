"""Requests with tools: the node's answer made OpenAI-shaped and checked (backends.tooling)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from backends.base import Chunk
from backends.tooling import Dialect, calls_in, involves_tools, relay

pytestmark = pytest.mark.anyio

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
        },
    },
}
ASK = {"messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [WEATHER]}
CPP = Dialect("llama_cpp_server", "hermes")


def text_chunk(text: str) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})


def finish(reason: str = "stop", **extra: Any) -> Chunk:
    return Chunk({"choices": [{"index": 0, "delta": {}, "finish_reason": reason}], **extra})


async def from_list(chunks: list[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk


class Reasker:
    """A stand-in for the node's second request: answers with ``reply`` and keeps the body."""

    def __init__(self, reply: list[Chunk]) -> None:
        self.reply = reply
        self.bodies: list[Mapping[str, Any]] = []

    @asynccontextmanager
    async def __call__(self, body: Mapping[str, Any]) -> AsyncIterator[AsyncIterator[Chunk]]:
        self.bodies.append(body)
        yield from_list(self.reply)


async def run(
    chunks: list[Chunk], body: Mapping[str, Any] = ASK, reask: Reasker | None = None
) -> tuple[list[dict[str, Any]], Reasker]:
    reasker = reask or Reasker([])
    plan = CPP.plan(body)
    out = [c.data async for c in relay(body, plan, from_list(chunks), reasker, CPP)]
    return out, reasker


def deltas(out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c["choices"][0]["delta"] for c in out if c.get("choices")]


class TestRelay:
    async def test_a_call_written_as_text_becomes_tool_calls(self) -> None:
        """A fenced JSON call in the text comes out as one OpenAI tool call, no content."""
        text = '```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```'
        out, _ = await run([text_chunk(text[:20]), text_chunk(text[20:]), finish()])
        calls = calls_in(out)
        assert [(c.name, json.loads(c.arguments)) for c in calls] == [
            ("get_weather", {"city": "Paris"})
        ]
        assert not any(d.get("content") for d in deltas(out))
        assert out[-1]["choices"][0]["finish_reason"] == "tool_calls"
        call = next(d for d in deltas(out) if d.get("tool_calls"))["tool_calls"][0]
        assert call["id"].startswith("call_") and call["index"] == 0

    async def test_plain_text_streams_and_keeps_its_finish(self) -> None:
        out, reasker = await run([text_chunk("It is sunny "), text_chunk("in Paris."), finish()])
        assert "".join(d.get("content", "") for d in deltas(out)) == "It is sunny in Paris."
        assert out[-1]["choices"][0]["finish_reason"] == "stop" and not reasker.bodies

    async def test_arguments_that_break_the_schema_are_asked_again(self) -> None:
        """A call missing a required argument gets one re-ask with that tool forced; the
        re-asked call replaces it."""
        bad = '{"name": "get_weather", "arguments": {"unit": "c"}}'
        good = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}'
        reasker = Reasker([text_chunk(good), finish()])
        out, _ = await run([text_chunk(bad), finish()], reask=reasker)
        (call,) = calls_in(out)
        assert json.loads(call.arguments) == {"city": "Paris", "unit": "c"}
        forced = reasker.bodies[0]
        assert forced["tool_choice"]["function"]["name"] == "get_weather"

    async def test_unparseable_arguments_are_never_returned(self) -> None:
        """When even the re-ask gives no valid JSON, the broken call is dropped."""
        function = {"name": "get_weather", "arguments": '{"city": "Par'}
        delta = {"tool_calls": [{"index": 0, "id": "x", "function": function}]}
        broken = Chunk({"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        out, reasker = await run([broken, finish("tool_calls")], reask=Reasker([finish()]))
        assert calls_in(out) == [] and len(reasker.bodies) == 1
        assert out[-1]["choices"][0]["finish_reason"] == "stop"

    async def test_repeated_names_in_deltas_are_sent_once(self) -> None:
        """llama_cpp.server repeats the name in every delta; the client sees it once."""

        def piece(arguments: str) -> Chunk:
            call = {"index": 0, "id": "call__0", "function": {"name": "get_weather",
                                                               "arguments": arguments}}  # fmt: skip
            return Chunk({"choices": [{"index": 0, "delta": {"tool_calls": [call]},
                                       "finish_reason": None}]})  # fmt: skip

        out, _ = await run([piece('{"city": '), piece('"Paris"}'), finish("tool_calls")])
        names = [t["function"].get("name") for d in deltas(out) for t in d.get("tool_calls", [])]
        assert [n for n in names if n] == ["get_weather"]
        assert json.loads(calls_in(out)[0].arguments) == {"city": "Paris"}

    async def test_usage_and_timings_of_the_finish_are_kept(self) -> None:
        text = '{"name": "get_weather", "arguments": {"city": "Oslo"}}'
        usage = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}
        out, _ = await run([text_chunk(text), finish(usage=usage, timings={"x": 1})])
        assert out[-1]["usage"] == usage and out[-1]["timings"] == {"x": 1}


class TestPlanning:
    def test_a_conversation_with_tool_results_involves_tools(self) -> None:
        history = [{"role": "tool", "tool_call_id": "c1", "content": "18 C"}]
        assert involves_tools({"messages": history})
        assert not involves_tools({"messages": [{"role": "user", "content": "hi"}]})

    def test_llama_cpp_server_gets_json_schema_as_json_object(self) -> None:
        schema = {"type": "object"}
        body = {"response_format": {"type": "json_schema", "json_schema": {"schema": schema}}}
        sent = CPP.formatted(body)["response_format"]
        assert sent == {"type": "json_object", "schema": schema}
        native = Dialect("llama_server", "hermes")
        assert native.formatted(body) is body

    def test_a_required_call_is_forced_with_a_schema(self) -> None:
        plan = CPP.plan({**ASK, "tool_choice": "required"})
        fmt = plan.body["response_format"]
        assert fmt["type"] == "json_object" and plan.must_call
        assert "get_weather" in json.dumps(fmt["schema"])


class TestRepeats:
    async def test_a_call_repeating_an_answered_one_is_asked_again_for_words(self) -> None:
        """After a tool result, a small model may call the same tool the same way again; the
        gateway asks once more with no call allowed and gives that answer."""
        history = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "17 C, cloudy"},
        ]  # fmt: skip
        body = {**ASK, "messages": history}
        again = '{"name": "get_weather", "arguments": {"city":"Paris"}}'
        reasker = Reasker([text_chunk("It is 17 C and cloudy in Paris."), finish()])
        out, _ = await run([text_chunk(again), finish()], body=body, reask=reasker)
        assert calls_in(out) == []
        assert (
            "".join(d.get("content", "") for d in deltas(out)) == "It is 17 C and cloudy in Paris."
        )
        assert out[-1]["choices"][0]["finish_reason"] == "stop"
        assert "tools" not in reasker.bodies[0]

    async def test_a_new_call_after_a_result_is_kept(self) -> None:
        history = [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "17 C"},
        ]  # fmt: skip
        fresh = '{"name": "get_weather", "arguments": {"city": "Rome"}}'
        out, reasker = await run([text_chunk(fresh), finish()], body={**ASK, "messages": history})
        assert [c.name for c in calls_in(out)] == ["get_weather"] and not reasker.bodies
