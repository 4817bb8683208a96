"""A streamed answer handed on to another node mid-answer, as the client and operators see it:
one answer with one id and [DONE], and the hand-over in the booagent object, log and metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from backends.config import Member
from backends.errors import NodeUnreachable
from gateway.app import create_app
from tests.fakes import FakeNode, fake_pool, settings_for

pytestmark = pytest.mark.anyio

M1 = Member(name="m1")
ANSWER = "the moon is a rock in space"
ASK = {
    "model": "m1",
    "messages": [{"role": "user", "content": "Tell me about the moon."}],
    "stream": True,
    "stream_options": {"include_usage": True},
}
HANDED = {"from": "a", "to": "b", "after_chars": len("the moon"), "reason": "unreachable"}


def _app() -> Any:
    """Node a answers first and fails after two words; b, a native llama-server, goes on."""
    cut = NodeUnreachable("a", "connection lost: reset")
    first = FakeNode("a", reply=ANSWER, fail_after=cut, fail_at=2)
    second = FakeNode("b", reply=ANSWER, kind="llama_server")
    pool = fake_pool([(first, M1), (second, M1)])
    pool.nodes[0].stats.ttft, pool.nodes[1].stats.ttft = 0.001, 10.0  # a is picked first
    settings = settings_for([M1], [("a", "m1"), ("b", "m1")])
    return create_app(settings, pool_factory=lambda _: pool)


def _frames(text: str) -> list[Any]:
    return [
        json.loads(f.removeprefix("data: ")) for f in text.split("\n\n") if f.startswith("data: {")
    ]


async def test_the_client_gets_one_whole_answer_with_one_id_and_done() -> None:
    async with AsyncTestClient(_app()) as client:
        response = await client.post("/v1/chat/completions", json=ASK)
    frames = _frames(response.text)
    content = "".join(f["choices"][0]["delta"].get("content") or "" for f in frames if f["choices"])
    assert content == ANSWER
    assert len({f["id"] for f in frames}) == 1
    assert response.text.endswith("data: [DONE]\n\n") and not any("error" in f for f in frames)
    assert response.headers["x-booagent-node"] == "a"
    assert [f["choices"][0]["delta"].get("role") for f in frames if f["choices"]].count(
        "assistant"
    ) == 1


async def test_the_booagent_object_names_both_nodes_and_usage_counts_both_parts() -> None:
    async with AsyncTestClient(_app()) as client:
        response = await client.post("/v1/chat/completions", json=ASK)
    *_, finish, usage = _frames(response.text)
    record = finish["booagent"]
    assert record["continued"] == [HANDED]
    (call,) = record["calls"]
    assert (call["node"], call["attempts"], call["failures"]) == ("a", 2, ["a: unreachable"])
    assert call["continued"] == [HANDED] and call["tokens"] == 7
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert usage["usage"]["completion_tokens"] == 7


async def test_the_log_line_and_the_metrics_count_the_hand_over() -> None:
    app = _app()
    async with AsyncTestClient(app) as client:
        with capture_logs(processors=[merge_contextvars]) as logs:
            await client.post("/v1/chat/completions", json=ASK)
        scraped = await client.get("/metrics")
    line = next(e for e in logs if e["event"] == "chat_completion")
    assert (line["status"], line["attempts"], line["continued"]) == (200, 2, [HANDED])
    assert line["failures"] == ["a: unreachable"] and line["tokens_out"] == 7
    families = {f.name: f for f in text_string_to_metric_families(scraped.text)}

    def total(name: str) -> float:
        return sum(s.value for s in families[name].samples if s.name.endswith("_total"))

    assert (total("booagent_streams_continued"), total("booagent_streams_interrupted")) == (1, 0)
    assert total("booagent_node_failures") == 1
