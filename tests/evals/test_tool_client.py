"""The client on tool items: what it sends and the calls it reads, over real HTTP on loopback.

The server is a small OpenAI-shaped endpoint that records each request body and answers with
a fixed message, so the test sees exactly what the SDK put on the wire and what it parsed.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from evals.cache import Answer, Cache, ToolCall
from evals.client import Asker, Sampling
from evals.items import Item, load_suite
from evals.runner import cache_key, run

SUITE = {item.id: item for item in load_suite()}
STOCK_ITEM = SUITE["tool-002"]  # choose: get_stock_quote for Nvidia
NAMED_ITEM = next(
    i for i in SUITE.values() if i.kind == "tool" and i.tool_choice and i.messages == ()
)
RESULT_ITEM = next(i for i in SUITE.values() if i.kind == "tool" and i.messages)


def function_call(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


@dataclass
class ToolNode:
    """What the loopback server answers (``message``) and what it was asked (``bodies``)."""

    message: dict[str, Any]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def completion(message: dict[str, Any]) -> bytes:
    finish = "tool_calls" if message.get("tool_calls") else "stop"
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    return json.dumps(body).encode()


@pytest.fixture
def node() -> Iterator[ToolNode]:
    state = ToolNode({"role": "assistant", "content": "hello"})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            state.bodies.append(json.loads(self.rfile.read(length)))
            data = completion(state.message)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


DEFAULT_SAMPLING = Sampling()


def ask(url: str, item: Item, sampling: Sampling = DEFAULT_SAMPLING) -> Answer:
    async def main() -> Answer:
        async with Asker(url, retries=0) as asker:
            return await asker.ask("m", item.body, sampling)

    return asyncio.run(main())


class TestSending:
    """A tool item's request carries its tools, its tool_choice and the turns before the answer."""

    def test_max_tokens_zero_sends_no_cap(self, node: ToolNode) -> None:
        ask(node.url, NAMED_ITEM, Sampling(max_tokens=0))
        ask(node.url, NAMED_ITEM, Sampling(max_tokens=64))
        uncapped, capped = node.bodies
        assert "max_tokens" not in uncapped and capped["max_tokens"] == 64

    def test_tools_and_named_choice(self, node: ToolNode) -> None:
        ask(node.url, NAMED_ITEM)
        (sent,) = node.bodies
        assert sent["tools"] == NAMED_ITEM.body["tools"]
        assert sent["tool_choice"] == NAMED_ITEM.body["tool_choice"]
        assert sent["messages"] == [{"role": "user", "content": NAMED_ITEM.prompt}]

    def test_earlier_call_and_its_result(self, node: ToolNode) -> None:
        ask(node.url, RESULT_ITEM)
        (sent,) = node.bodies
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["user", "assistant", "tool"]
        assert sent["messages"] == RESULT_ITEM.body["messages"]
        assert json.loads(sent["messages"][1]["tool_calls"][0]["function"]["arguments"])

    def test_sampling_as_for_other_kinds(self, node: ToolNode) -> None:
        ask(node.url, STOCK_ITEM)
        (sent,) = node.bodies
        assert (sent["max_tokens"], sent["temperature"], sent["seed"]) == (256, 0.0, 1234)

    def test_text_items_send_no_tools(self, node: ToolNode) -> None:
        ask(node.url, SUITE["fact-001"])
        (sent,) = node.bodies
        assert "tools" not in sent and "tool_choice" not in sent


class TestReading:
    """The answer keeps its calls, in order, with arguments exactly as returned."""

    def test_calls_in_order_and_verbatim(self, node: ToolNode) -> None:
        node.message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                function_call("call_1", "get_stock_quote", '{"symbol": "NVDA"}'),
                function_call("call_2", "web_search", '{"query": "nvidia'),
            ],
        }
        answer = ask(node.url, STOCK_ITEM)
        assert answer.text == ""
        assert answer.finish_reason == "tool_calls"
        assert answer.tool_calls == (
            ToolCall("get_stock_quote", '{"symbol": "NVDA"}'),
            ToolCall("web_search", '{"query": "nvidia'),
        )

    def test_a_text_answer_has_no_calls(self, node: ToolNode) -> None:
        answer = ask(node.url, STOCK_ITEM)
        assert (answer.text, answer.tool_calls) == ("hello", ())


class TestRun:
    """The runner scores the calls and caches them; a second run asks nothing."""

    def test_scored_cached_and_rescored(self, node: ToolNode, tmp_path: Path) -> None:
        node.message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [function_call("call_1", "get_stock_quote", '{"symbol":"NVDA"}')],
        }
        cache = tmp_path / "cache.sqlite3"
        (first,) = run(node.url, ["m"], [STOCK_ITEM], cache_path=cache)
        (second,) = run(node.url, ["m"], [STOCK_ITEM], cache_path=cache)
        assert len(node.bodies) == 1
        assert (first.correct, first.detail, first.cached) == (
            True,
            "called get_stock_quote",
            False,
        )
        assert (second.correct, second.cached, second.tool_calls) == (True, True, first.tool_calls)
        with Cache(cache) as stored:
            answer = stored.get(cache_key("m", STOCK_ITEM, Sampling()))
        assert answer is not None and answer.tool_calls == first.tool_calls
