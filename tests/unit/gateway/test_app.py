"""The Litestar app in process (AsyncTestClient) over fake nodes: wiring, headers, logs."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from backends.config import Member
from backends.errors import NodeUnreachable
from gateway.app import create_app
from tests.fakes import FakeNode, fake_pool, settings_for

pytestmark = pytest.mark.anyio

M1, M2 = Member(name="m1"), Member(name="m2")
HELLO = {"model": "booagent-cluster", "messages": [{"role": "user", "content": "hi"}]}


def _app(first: FakeNode, second: FakeNode) -> Any:
    settings = settings_for([M1, M2], [(first.name, "m1"), (second.name, "m2")])
    pool = fake_pool([(first, M1), (second, M2)])
    return create_app(settings, pool_factory=lambda _: pool)


async def test_one_log_line_per_request_with_failures() -> None:
    """After a failover, the request's single log line names the node and each failure."""
    bad = FakeNode("a", fail_before=NodeUnreachable("a", "refused"))
    good = FakeNode("b", reply="fine thanks")
    async with AsyncTestClient(_app(bad, good)) as client:
        with capture_logs(processors=[merge_contextvars]) as logs:
            response = await client.post("/v1/chat/completions", json=HELLO)
    assert response.status_code == 200
    lines = [entry for entry in logs if entry["event"] == "chat_completion"]
    assert len(lines) == 1
    line = lines[0]
    assert (line["status"], line["node"], line["attempts"]) == (200, "b", 2)
    assert line["failures"] == ["a: unreachable"]
    assert line["tokens_out"] == 2 and line["request_id"] == response.headers["x-request-id"]


async def test_one_log_line_for_a_stream_written_after_its_end() -> None:
    """A streamed answer's line is written once, after the last frame went out."""
    app = _app(FakeNode("a", reply="fine thanks"), FakeNode("b"))
    async with AsyncTestClient(app) as client:
        with capture_logs(processors=[merge_contextvars]) as logs:
            response = await client.post("/v1/chat/completions", json={**HELLO, "stream": True})
            body = response.text
    lines = [entry for entry in logs if entry["event"] == "chat_completion"]
    assert body.endswith("data: [DONE]\n\n")
    assert [(line["status"], line["stream"], line["tokens_out"]) for line in lines] == [
        (200, True, 2)
    ]


@pytest.mark.parametrize("stream", [False, True])
async def test_one_log_line_when_every_node_fails(stream: bool) -> None:
    """A request no node could answer is logged once, with the status the client got."""
    app = _app(
        FakeNode("a", fail_before=NodeUnreachable("a", "refused")),
        FakeNode("b", fail_before=NodeUnreachable("b", "refused")),
    )
    async with AsyncTestClient(app) as client:
        with capture_logs(processors=[merge_contextvars]) as logs:
            response = await client.post("/v1/chat/completions", json={**HELLO, "stream": stream})
    lines = [entry for entry in logs if entry["event"] == "chat_completion"]
    assert response.status_code == 502
    assert [(line["status"], line["attempts"]) for line in lines] == [(502, 3)]
    assert "all 3 attempts failed" in lines[0]["error"]


@pytest.mark.parametrize("stream", [False, True])
async def test_answered_requests_free_their_node_and_are_counted(stream: bool) -> None:
    """Once an answer is sent, its node's slot is free again and the answer is counted."""
    app = _app(FakeNode("a", delay=0.001), FakeNode("b"))
    async with AsyncTestClient(app) as client:
        for _ in range(3):
            response = await client.post("/v1/chat/completions", json={**HELLO, "stream": stream})
            assert response.status_code == 200 and "hello" in response.text
        view = (await client.get("/v1/cluster")).json()
    node = next(n for n in view["nodes"] if n["name"] == "a")
    assert (node["in_flight"], node["served"], node["failed"]) == (0, 3, 0)


async def test_answer_headers_name_node_attempts_strategy() -> None:
    async with AsyncTestClient(_app(FakeNode("a"), FakeNode("b"))) as client:
        response = await client.post("/v1/chat/completions", json=HELLO)
    assert response.headers["x-booagent-node"] == "a"
    assert response.headers["x-booagent-attempts"] == "1"
    assert response.headers["x-booagent-strategy"] == "route"


async def test_incoming_request_id_is_kept() -> None:
    async with AsyncTestClient(_app(FakeNode("a"), FakeNode("b"))) as client:
        response = await client.get("/health", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_error_log_line_for_unknown_model() -> None:
    async with AsyncTestClient(_app(FakeNode("a"), FakeNode("b"))) as client:
        response = await client.post("/v1/chat/completions", json={**HELLO, "model": "nope"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


async def test_cluster_view_lists_every_node() -> None:
    async with AsyncTestClient(_app(FakeNode("a"), FakeNode("b"))) as client:
        view = (await client.get("/v1/cluster")).json()
    assert [n["name"] for n in view["nodes"]] == ["a", "b"]
    assert {n["state"] for n in view["nodes"]} == {"ready"}
