"""The chat handler's commit contract and records, in process over fake nodes.

One contract for every strategy (gateway.chat): nothing is sent before the answer commits;
before that a failure is an HTTP status; strategies that consult members keep a streaming
client alive meanwhile; after the commit a failure is an error frame and no [DONE].
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from litestar.testing import AsyncTestClient
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from backends.config import Member
from backends.errors import NodeOverloaded, NodeUnreachable
from gateway.app import create_app
from tests.fakes import FakeNode, fake_pool, settings_for

pytestmark = pytest.mark.anyio

M1, M2 = Member(name="m1"), Member(name="m2")
ASK = {"messages": [{"role": "user", "content": "Tell me about the moon."}]}
CASCADE = {
    "keepalive_seconds": 0.05,
    "cascade": {"ladders": {"default": ["m1", "m2"]}, "check_agreement": False},
}


def _app(*nodes: tuple[FakeNode, Member], strategies: dict[str, Any] | None = None) -> Any:
    members = list(dict.fromkeys(m for _, m in nodes))
    settings = settings_for(
        members, [(n.name, m.name) for n, m in nodes], strategies=strategies or CASCADE
    )
    pool = fake_pool(list(nodes))
    return create_app(settings, pool_factory=lambda _: pool)


class FlakyOnce(FakeNode):
    """Refuses its first request, then answers."""

    def stream(self, request: Any) -> Any:
        if not self.requests:
            self.requests.append(request)
            raise NodeUnreachable(self.name, "refused")
        return super().stream(request)


def _frames(body: str) -> list[str]:
    return [f for f in body.split("\n\n") if f]


async def _post(app: Any, model: str, *, stream: bool) -> Any:
    async with AsyncTestClient(app) as client:
        body = {**ASK, "model": model, "stream": stream}
        return await client.post("/v1/chat/completions", json=body)


class TestKeepAlive:
    async def test_a_deliberating_strategy_keeps_the_stream_alive_until_its_answer(self) -> None:
        """A cascade that takes longer than ``keepalive_seconds`` commits with a keep-alive
        comment, sends one per interval, then the chosen answer and [DONE]."""
        slow = FakeNode("a", reply="the moon is a rock", delay=0.06)
        response = await _post(_app((slow, M1)), "booagent-cluster:cascade", stream=True)
        frames = _frames(response.text)
        keepalives = [f for f in frames if f.startswith(":")]
        assert response.status_code == 200 and len(keepalives) >= 2
        assert frames.index(keepalives[-1]) < frames.index(next(f for f in frames if "rock" in f))
        assert frames[-1] == "data: [DONE]"
        assert response.headers["x-booagent-strategy"] == "cascade"
        assert "x-booagent-node" not in response.headers, "committed before the node was known"
        final = json.loads(frames[-2].removeprefix("data: "))
        assert final["booagent"]["node"] == "a"

    async def test_a_quick_decision_commits_with_the_node_named(self) -> None:
        """A decision made within ``keepalive_seconds`` sends no keep-alive; its headers name
        the winning node."""
        quick = {**CASCADE, "keepalive_seconds": 30.0}
        app = _app((FakeNode("a", reply="the moon is a rock"), M1), strategies=quick)
        response = await _post(app, "booagent-cluster:cascade", stream=True)
        assert not [f for f in _frames(response.text) if f.startswith(":")]
        assert response.headers["x-booagent-node"] == "a"

    async def test_route_never_commits_before_its_first_token(self) -> None:
        """Routing sends nothing, not even a keep-alive, before the node's first token."""
        slow = FakeNode("a", reply="the moon is a rock", delay=0.06)
        app = _app((slow, M1), strategies={**CASCADE, "default": "route"})
        response = await _post(app, "booagent-cluster", stream=True)
        assert not [f for f in _frames(response.text) if f.startswith(":")]
        assert response.headers["x-booagent-node"] == "a"


class TestEveryMemberFails:
    @pytest.mark.parametrize("stream", [False, True])
    @pytest.mark.parametrize("model", ["booagent-cluster:cascade", "booagent-cluster:route"])
    async def test_before_the_commit_it_is_an_http_status(self, model: str, stream: bool) -> None:
        """Cascade and route give the same 502 and error body when every member fails before
        anything was sent, streamed or not."""
        nodes = (
            (FakeNode("a", fail_before=NodeUnreachable("a", "refused")), M1),
            (FakeNode("b", fail_before=NodeUnreachable("b", "refused")), M2),
        )
        response = await _post(_app(*nodes), model, stream=stream)
        assert response.status_code == 502
        assert response.headers["x-should-retry"] == "false"
        assert response.json()["error"]["code"] == "all_nodes_failed"

    async def test_a_busy_cluster_is_503_with_retry_after_for_a_cascade(self) -> None:
        """Every member overloaded: the cascade answers as the pool would, 503 + Retry-After."""
        nodes = (
            (FakeNode("a", fail_before=NodeOverloaded("a", "busy", retry_after=3)), M1),
            (FakeNode("b", fail_before=NodeOverloaded("b", "busy", retry_after=3)), M2),
        )
        response = await _post(_app(*nodes), "booagent-cluster:cascade", stream=False)
        assert response.status_code == 503 and response.headers["retry-after"] == "3"

    async def test_after_a_keepalive_commit_it_is_an_error_frame(self) -> None:
        """Members that fail after the stream committed end it with an error frame, no [DONE]."""
        nodes = (
            (FakeNode("a", delay=0.1, fail_after=NodeUnreachable("a", "reset")), M1),
            (FakeNode("b", delay=0.1, fail_after=NodeUnreachable("b", "reset")), M2),
        )
        response = await _post(_app(*nodes), "booagent-cluster:cascade", stream=True)
        frames = _frames(response.text)
        assert response.status_code == 200 and frames[0].startswith(":")
        error = json.loads(frames[-1].removeprefix("data: "))["error"]
        assert error["code"] == "all_nodes_failed"
        assert "data: [DONE]" not in frames


class TestRecords:
    async def test_a_member_call_keeps_its_failures_and_queue_wait(self) -> None:
        """A cascade's call that failed over inside its member shows the failure in its own
        record, in the booagent object and in the log line."""
        flaky = FlakyOnce("a", reply="the moon is a rock")
        app = _app((flaky, M1), strategies={**CASCADE, "cascade": {"ladders": {"default": ["m1"]}}})
        with capture_logs(processors=[merge_contextvars]) as logs:
            response = await _post(app, "booagent-cluster:cascade", stream=False)
        record = response.json()["booagent"]
        call = record["calls"][0]
        assert (call["node"], call["attempts"], call["failures"]) == ("a", 2, ["a: unreachable"])
        assert call["queue_wait_s"] >= 0 and record["failures"] == ["a: unreachable"]
        line = next(e for e in logs if e["event"] == "chat_completion")
        assert (line["attempts"], line["failures"]) == (2, ["a: unreachable"])

    async def test_a_whole_answer_has_its_length(self) -> None:
        response = await _post(_app((FakeNode("a"), M1)), "m1", stream=False)
        assert int(response.headers["content-length"]) == len(response.content)


class TestManyTools:
    async def test_a_turn_offering_many_unrelated_tools_is_sent_without_them(self) -> None:
        """Of twelve offered tools none is about the question: the node gets none, and the
        answer says what was offered and sent."""
        node = FakeNode("a", reply="the moon is a rock")
        tools = [
            {"type": "function", "function": {"name": f"manage_widget_{i}",
                                              "description": "Manage a widget."}}
            for i in range(12)
        ]  # fmt: skip
        async with AsyncTestClient(_app((node, M1))) as client:
            body = {**ASK, "model": "m1", "tools": tools}
            response = await client.post("/v1/chat/completions", json=body)
        assert response.json()["booagent"]["tools"] == {"offered": 12, "sent": []}
        assert "tools" not in node.requests[0].body
