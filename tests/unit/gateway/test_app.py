"""The Litestar app in process (AsyncTestClient) over fake nodes: wiring, headers, logs."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from litestar.testing import AsyncTestClient
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from backends.config import Member
from backends.errors import NodeProtocolError, NodeUnreachable
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


async def test_the_log_line_of_a_request_a_node_failed_names_that_node() -> None:
    """A request the node failed inside its answer while staying healthy (a 400 to the client)
    was still sent to it: its log line counts the attempt and names the node."""
    refused = NodeProtocolError("a", "stream ended empty", inside_answer=True)
    app = _app(FakeNode("a", fail_before=refused), FakeNode("b"))
    async with AsyncTestClient(app) as client:
        with capture_logs(processors=[merge_contextvars]) as logs:
            response = await client.post("/v1/chat/completions", json={**HELLO, "model": "m1"})
    assert response.status_code == 400
    (line,) = [entry for entry in logs if entry["event"] == "chat_completion"]
    assert (line["status"], line["attempts"]) == (400, 1)
    assert line["failures"] == ["a: request_failed"]


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


async def _body_writes(app: Any, body: dict[str, Any]) -> list[bytes]:
    """The non-empty body messages the app sends for one streamed request, in order."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": None,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(raw))],
    }  # fmt: skip
    incoming = [{"type": "http.request", "body": raw, "more_body": False}]
    writes: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message.get("body"):
            writes.append(message["body"])

    await app(scope, receive, send)
    return writes


@pytest.mark.parametrize(("together", "content_writes"), [(True, 1), (False, 3)])
async def test_chunks_that_arrive_together_are_sent_in_one_write(
    together: bool, content_writes: int
) -> None:
    """A node's chunks read at once (``Chunk.more``) reach the client in one write; the
    finishing frame (with the booagent object) and [DONE] follow, in one last write."""
    app = _app(FakeNode("a", reply="fine thanks", together=together), FakeNode("b"))
    async with AsyncTestClient(app):
        writes = await _body_writes(app, {**HELLO, "stream": True})
    *content, last = writes
    assert len(content) == content_writes
    assert b"".join(content).count(b"data: ") == 3  # role, "fine", " thanks"
    assert b'"role"' in content[0] and b'" thanks"' in content[-1]
    final, done = last.split(b"\n\n")[:2]
    assert b'"booagent"' in final and b'"finish_reason":"stop"' in final
    assert done == b"data: [DONE]" and last.endswith(b"\n\n")


async def test_frames_held_for_a_next_chunk_go_out_before_the_error() -> None:
    """A node that fails right after a chunk announced another: that chunk's frame is sent,
    then the error frame, then nothing more."""
    broken = NodeUnreachable("a", "connection reset")
    app = _app(FakeNode("a", reply="fine thanks", together=True, fail_after=broken), FakeNode("b"))
    async with AsyncTestClient(app):
        body = b"".join(await _body_writes(app, {**HELLO, "stream": True}))
    frames = [json.loads(f[6:]) for f in body.split(b"\n\n") if f.startswith(b"data: {")]
    assert [f["choices"][0]["delta"].get("content") for f in frames[:-1]] == [None, "fine"]
    assert "failed after the answer began" in frames[-1]["error"]["message"]
    assert not body.endswith(b"[DONE]\n\n")


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
