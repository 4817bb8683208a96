"""Tests for backends.http: error mapping, and HttpNode against a scripted node on loopback."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.base import ChatRequest, Chunk
from backends.build import node_session
from backends.config import Node, Timeouts
from backends.errors import (
    ContextLengthExceeded,
    NodeError,
    NodeOverloaded,
    NodeProtocolError,
    NodeRejected,
    NodeServerError,
    NodeTimeout,
    NodeUnreachable,
    RetryableNodeError,
)
from backends.http import HttpNode, Probe
from backends.http_errors import map_errors, status_error
from backends.sse import encode_comment, encode_data
from tests.faults._wire import Connection, Request
from tests.faults.scripted import Cut, Script, ScriptedNode, garbage, hang, reset, respond, stream
from tests.harness import free_port

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"
REQUEST = ChatRequest({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5})
ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
DONE = encode_data("[DONE]")
KEEP_ALIVE = encode_comment("keep-alive")
OK = respond(200, {"status": "ok"})


def content(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def frame(chunk: dict[str, Any]) -> bytes:
    return encode_data(json.dumps(chunk, ensure_ascii=False))


def error_json(message: str, code: Any = None, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


def in_turn(*scripts: Script) -> Script:
    """Each request answered by the next script."""
    remaining = iter(scripts)

    async def script(conn: Connection, req: Request) -> bool:
        return await next(remaining)(conn, req)

    return script


def spec(url: str, api_key: str = "sekret") -> Node:
    return Node(name="n1", member="qwen", url=url + "/", api_key=api_key)


@asynccontextmanager
async def http_node(
    routes: Mapping[str, Script], api_key: str = "sekret", **timeouts: float
) -> AsyncIterator[tuple[HttpNode, ScriptedNode]]:
    """An HttpNode on the production session, talking to a scripted node."""
    async with ScriptedNode(routes) as server, node_session() as session:
        yield HttpNode(spec(server.url, api_key), session, Timeouts(**timeouts)), server


@asynccontextmanager
async def node_at(url: str, **timeouts: float) -> AsyncIterator[HttpNode]:
    """An HttpNode for ``url``, where nothing (or nothing useful) listens."""
    async with node_session() as session:
        yield HttpNode(spec(url), session, Timeouts(**timeouts))


async def read(node: HttpNode) -> list[Chunk]:
    async with node.stream(REQUEST) as reply:
        return [chunk async for chunk in reply]


async def collect(script: Script, **timeouts: float) -> list[Chunk]:
    async with http_node({CHAT: script}, **timeouts) as (node, _):
        return await read(node)


async def until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


@contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full, so a connect there neither succeeds nor fails."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        fillers = [socket.socket() for _ in range(2)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
            yield port
        finally:
            for filler in fillers:
                filler.close()


class TestStatusError:
    @pytest.mark.parametrize("status", [408, 409, 429, 503])
    def test_busy_statuses_are_overloaded(self, status: int) -> None:
        """Statuses that mean "busy, try later" become NodeOverloaded with the hint."""
        error = status_error("n", status, error_json("busy"), 2.0)
        assert isinstance(error, NodeOverloaded)
        assert error.retry_after == 2.0
        assert error.node == "n"

    @pytest.mark.parametrize("status", [500, 502, 504])
    def test_server_errors_are_retryable(self, status: int) -> None:
        """Other 5xx answers are the node's fault and may succeed elsewhere."""
        error = status_error("n", status, error_json("oops"), None)
        assert isinstance(error, NodeServerError)
        assert "oops" in error.message

    @pytest.mark.parametrize(
        "body",
        [
            error_json("too long", code="context_length_exceeded"),
            error_json("too long", code=400, kind="exceed_context_size_error"),
            error_json("the request exceeds the available context size"),
        ],
        ids=["openai-code", "llama-server-type", "message"],
    )
    def test_context_overflow_is_recognised(self, body: bytes) -> None:
        """OpenAI and llama-server spellings of "prompt too long" become ContextLengthExceeded."""
        error = status_error("n", 400, body, None)
        assert isinstance(error, ContextLengthExceeded)
        assert error.status_code == 400
        assert error.code == "context_length_exceeded"

    def test_other_client_errors_are_rejections_with_their_status(self) -> None:
        """A 4xx keeps its status, message and code for the client."""
        error = status_error("n", 422, error_json("bad grammar", code="bad_grammar"), None)
        assert type(error) is NodeRejected
        assert (error.status_code, error.code) == (422, "bad_grammar")
        assert error.message == "node n: bad grammar"

    @pytest.mark.parametrize(
        ("body", "expected"),
        [(b"plain text failure", "plain text failure"), (b"", "no body"), (b"[1, 2]", "[1, 2]")],
    )
    def test_non_openai_bodies_keep_their_text(self, body: bytes, expected: str) -> None:
        """A body that is not an OpenAI error is quoted as it is."""
        assert expected in status_error("n", 404, body, None).message

    def test_string_error_field(self) -> None:
        """``{"error": "text"}`` uses the text as the message."""
        assert status_error("n", 404, b'{"error": "no such model"}', None).message.endswith(
            "no such model"
        )

    @given(status=st.integers(400, 599), body=st.binary(max_size=200))
    def test_every_status_and_body_maps_to_one_error(self, status: int, body: bytes) -> None:
        """Any non-200 answer gives a node error; busy and server statuses are retryable."""
        error = status_error("n", status, body, None)
        retryable = status in (408, 409, 429) or status >= 500
        assert isinstance(error, RetryableNodeError) == retryable
        assert isinstance(error, NodeRejected) != retryable


class TestMapErrors:
    @pytest.mark.parametrize(
        ("failure", "expected", "message"),
        [
            (aiohttp.ConnectionTimeoutError("slow"), NodeTimeout, "connect timed out"),
            (aiohttp.SocketTimeoutError("slow"), NodeTimeout, "timed out"),
            (aiohttp.ServerDisconnectedError(), NodeUnreachable, "connection lost"),
            (aiohttp.ClientPayloadError("cut"), NodeUnreachable, "connection lost"),
            (aiohttp.ClientError("odd"), NodeUnreachable, "ClientError: odd"),
            (httpx.ConnectError("refused"), NodeUnreachable, "cannot connect"),
            (httpx.ConnectTimeout("slow"), NodeTimeout, "connect timed out"),
            (httpx.ReadTimeout("slow"), NodeTimeout, "timed out"),
            (httpx.RemoteProtocolError("garbage"), NodeUnreachable, "connection lost"),
        ],
    )
    def test_foreign_exceptions_become_node_errors(
        self, failure: Exception, expected: type[NodeError], message: str
    ) -> None:
        """aiohttp's exceptions (and httpx's, for the supervisor) never escape untranslated."""
        with pytest.raises(expected, match=message) as caught, map_errors("n1"):
            raise failure
        assert caught.value.node == "n1"
        assert caught.value.__cause__ is failure

    @pytest.mark.parametrize("failure", [TimeoutError(), ValueError("mine")])
    def test_other_exceptions_pass_through(self, failure: Exception) -> None:
        """asyncio's own TimeoutError (our deadlines) and non-HTTP errors are left alone."""
        with pytest.raises(type(failure)) as caught, map_errors("n1"):
            raise failure
        assert caught.value is failure


class TestRequest:
    async def test_sends_a_streaming_request_for_the_member(self) -> None:
        """The node is asked for a stream with usage, under its member's name, with the key."""
        async with http_node({CHAT: stream(DONE)}) as (node, server):
            assert await read(node) == []
        request = server.requests[0]
        assert (request.method, request.path) == ("POST", CHAT)
        assert request.headers["authorization"] == "Bearer sekret"
        assert request.headers["content-type"] == "application/json"
        assert json.loads(request.body) == {
            **REQUEST.body,
            "model": "qwen",
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    async def test_no_key_no_authorization_header(self) -> None:
        """A node without an API key gets no Authorization header."""
        async with http_node({CHAT: stream(DONE)}, api_key="") as (node, server):
            await read(node)
        assert "authorization" not in server.requests[0].headers


class TestStream:
    async def test_parses_chunks_until_done(self) -> None:
        """Every data frame before [DONE] arrives as a chunk, keep-alives skipped."""
        script = stream(
            frame(ROLE), KEEP_ALIVE, frame(content("Hel")), frame(content("lo")),
            frame(FINISH), frame(USAGE), DONE,
        )  # fmt: skip
        chunks = await collect(script)
        assert [c.data for c in chunks] == [ROLE, content("Hel"), content("lo"), FINISH, USAGE]
        assert "".join(c.content for c in chunks) == "Hello"
        assert chunks[-1].usage == USAGE["usage"]

    async def test_chunks_read_together_say_more_follows(self) -> None:
        """A chunk whose successor came in the same network read says so (``more``); the
        last one read before a pause does not."""
        script = stream(frame(ROLE) + frame(content("a")), 0.05, frame(FINISH), 0.05, DONE)
        chunks = await collect(script)
        assert [c.more for c in chunks] == [True, False, False]

    async def test_frames_split_across_network_reads(self) -> None:
        """Frames that arrive a byte at a time, UTF-8 characters cut too, are reassembled."""
        wire = frame(content("añ€")) + DONE
        parts = [part for i in range(len(wire)) for part in (wire[i : i + 1], 0.001)]
        chunks = await collect(stream(*parts))
        assert [c.content for c in chunks] == ["añ€"]

    async def test_very_long_line(self) -> None:
        """A 1 MB frame, longer than aiohttp's ``readline()`` takes, is one chunk."""
        chunks = await collect(stream(frame(content("x" * 1_000_000)), DONE))
        assert [len(c.content) for c in chunks] == [1_000_000]

    async def test_connection_is_reused(self) -> None:
        """The body is read to its end after [DONE], so the next request reuses the connection."""
        script = stream(frame(content("a")), DONE, 0.05)
        async with http_node({CHAT: script}) as (node, server):
            for _ in range(2):
                assert [c.content for c in await read(node)] == ["a"]
        assert (len(server.requests), server.connections) == (2, 1)

    async def test_leaving_early_closes_the_connection(self) -> None:
        """Leaving the block mid-stream closes the connection: the node sees its client go."""
        script = stream(frame(content("a")), frame(content("b")), math.inf)
        async with http_node({CHAT: script}) as (node, server):
            async with node.stream(REQUEST) as reply:
                async for _ in reply:
                    break
            await until(lambda: server.abandoned == 1)

    async def test_body_that_does_not_end_after_done_is_closed(self) -> None:
        """A body still open a moment after [DONE] does not hold the answer: it is cut off."""
        script = stream(frame(content("a")), DONE, math.inf)
        async with http_node({CHAT: script}) as (node, server):
            async with asyncio.timeout(2):
                assert [c.content for c in await read(node)] == ["a"]
            await until(lambda: server.abandoned == 1)

    async def test_stream_without_done_is_a_protocol_error(self) -> None:
        """A stream that ends without [DONE] before any finish_reason was cut off."""
        with pytest.raises(NodeProtocolError, match="without \\[DONE\\]"):
            await collect(stream(frame(content("a"))))

    async def test_stream_ending_after_its_finish_reason_is_complete(self) -> None:
        """A stream that ends without [DONE] after the chunk with its finish_reason is whole."""
        finished = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        chunks = await collect(stream(frame(content("a")), frame(finished)))
        assert [c.content for c in chunks] == ["a", ""]
        assert chunks[-1].finish_reason == "stop"

    @pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '"text"'])
    async def test_malformed_chunk_is_a_protocol_error(self, payload: str) -> None:
        """A data frame that is not a JSON object is NodeProtocolError."""
        with pytest.raises(NodeProtocolError):
            await collect(stream(encode_data(payload), DONE))

    async def test_error_frame_is_a_server_error(self) -> None:
        """An error object sent mid-stream becomes NodeServerError with its message."""
        script = stream(frame(content("a")), frame({"error": {"message": "slot crashed"}}), DONE)
        with pytest.raises(NodeServerError, match="slot crashed"):
            await collect(script)

    async def test_bare_error_line_is_a_server_error(self) -> None:
        """Older llama-server builds send ``error:`` lines; they fail the stream too."""
        script = stream(b'error: {"error": {"message": "kv cache full"}}\n\n', DONE)
        with pytest.raises(NodeServerError, match="kv cache full"):
            await collect(script)

    @pytest.mark.parametrize("cut", list(Cut))
    async def test_connection_lost_mid_stream_is_unreachable(self, cut: Cut) -> None:
        """A connection reset or closed while streaming is NodeUnreachable."""
        with pytest.raises(NodeUnreachable, match="connection lost"):
            await collect(stream(frame(content("a")), 0.05, cut))


class TestTimeouts:
    async def test_no_headers_before_first_token_limit(self) -> None:
        """A node that does not even answer with headers in time is NodeTimeout."""
        with pytest.raises(NodeTimeout, match="no response"):
            await collect(hang, first_token=0.05)

    async def test_no_content_before_first_token_limit(self) -> None:
        """Headers and a role chunk are not an answer: the first-token limit still fires."""
        script = stream(frame(ROLE), KEEP_ALIVE, 1.0, frame(content("late")), DONE)
        with pytest.raises(NodeTimeout, match="no content"):
            await collect(script, first_token=0.05)

    async def test_keep_alives_do_not_reset_the_stall_clock(self) -> None:
        """A node that only sends comments after its first token has stalled."""
        pings = [part for _ in range(10) for part in (0.03, KEEP_ALIVE)]
        script = stream(frame(content("a")), *pings, frame(content("b")), DONE)
        with pytest.raises(NodeTimeout):
            await collect(script, stall=0.15)

    async def test_non_content_chunks_do_not_reset_the_stall_clock(self) -> None:
        """Chunks without text, reasoning or tool calls are not progress."""
        empties = [part for _ in range(10) for part in (0.03, frame(ROLE))]
        script = stream(frame(content("a")), *empties, frame(content("b")), DONE)
        with pytest.raises(NodeTimeout):
            await collect(script, stall=0.15)

    async def test_steady_content_outlasts_the_stall_limit(self) -> None:
        """Content chunks reset the stall clock, so a slow but steady answer completes."""
        steady = [part for i in range(8) for part in (0.03, frame(content(str(i))))]
        chunks = await collect(stream(*steady, DONE), stall=0.15)
        assert len(chunks) == 8

    async def test_total_limit_ends_a_steady_answer(self) -> None:
        """The total limit fires even while content keeps coming."""
        steady = [part for i in range(20) for part in (0.02, frame(content(str(i))))]
        with pytest.raises(NodeTimeout):
            await collect(stream(*steady, DONE), total=0.15)

    async def test_connect_limit(self) -> None:
        """A node that accepts no connection within the connect limit is NodeTimeout."""
        with unanswered_port() as port:
            async with node_at(f"http://127.0.0.1:{port}", connect=0.1) as node:
                with pytest.raises(NodeTimeout, match="connect timed out"):
                    await read(node)


class TestStatus:
    async def test_429_carries_retry_after(self) -> None:
        """A busy node's Retry-After reaches NodeOverloaded.retry_after."""
        script = stream(error_json("busy"), status=429, headers={"retry-after": "7"})
        with pytest.raises(NodeOverloaded) as caught:
            await collect(script)
        assert caught.value.retry_after == 7.0

    async def test_retry_after_ms_is_preferred(self) -> None:
        """``retry-after-ms`` is the finer hint and wins over ``retry-after``."""
        headers = {"retry-after-ms": "1500", "retry-after": "9"}
        with pytest.raises(NodeOverloaded) as caught:
            await collect(stream(status=503, headers=headers))
        assert caught.value.retry_after == 1.5

    async def test_unparsable_retry_after_is_ignored(self) -> None:
        """An HTTP-date or garbage Retry-After gives no hint rather than an error."""
        headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
        with pytest.raises(NodeOverloaded) as caught:
            await collect(stream(status=429, headers=headers))
        assert caught.value.retry_after is None

    async def test_context_length_exceeded(self) -> None:
        """A 400 naming the context overflow is ContextLengthExceeded."""
        body = error_json("prompt too long", code="context_length_exceeded")
        with pytest.raises(ContextLengthExceeded, match="prompt too long"):
            await collect(stream(body, status=400))

    async def test_redirect_is_not_followed(self) -> None:
        """A node is never asked twice: a redirect is a rejection with its status."""
        script = stream(status=307, headers={"location": "/elsewhere"})
        async with http_node({CHAT: script, "/elsewhere": stream(DONE)}) as (node, server):
            with pytest.raises(NodeRejected) as caught:
                await read(node)
        assert caught.value.status_code == 307
        assert [r.path for r in server.requests] == [CHAT]

    async def test_error_response_is_read_and_its_connection_reused(self) -> None:
        """An error answer's body is read to its end; the next request reuses the connection."""
        script = in_turn(stream(error_json("boom"), 0.05, status=500), stream(DONE))
        async with http_node({CHAT: script}) as (node, server):
            with pytest.raises(NodeServerError, match="boom"):
                await read(node)
            assert await read(node) == []
        assert (len(server.requests), server.connections) == (2, 1)


class TestTransport:
    async def test_connection_refused_is_unreachable(self) -> None:
        """Nothing listening: NodeUnreachable."""
        async with node_at(f"http://127.0.0.1:{free_port()}") as node:
            with pytest.raises(NodeUnreachable, match="cannot connect"):
                await read(node)

    @pytest.mark.parametrize(
        "script", [reset, garbage(b"SSH-2.0-OpenSSH\r\n\r\n")], ids=["reset", "garbage"]
    )
    async def test_no_http_answer_is_unreachable(self, script: Script) -> None:
        """A reset instead of an answer, or an answer that is not HTTP: NodeUnreachable."""
        with pytest.raises(NodeUnreachable):
            await collect(script)


async def probe(routes: Mapping[str, Script], timeout: float = 1.0) -> Probe:
    async with http_node(routes) as (node, _):
        return await node.probe(timeout)


class TestProbe:
    async def test_llama_server_ready_reports_its_slots(self) -> None:
        """200 on /health is llama-server; /props (asked with the key) tells the slot count."""
        routes = {"/health": OK, "/props": respond(200, {"total_slots": 4})}
        async with http_node(routes) as (node, server):
            assert await node.probe(1.0) == Probe("ready", kind="llama_server", slots=4)
        assert server.requests[-1].headers["authorization"] == "Bearer sekret"

    @pytest.mark.parametrize(
        "props",
        [
            respond(500, b"no"),
            respond(200, b"not json"),
            respond(200, [4]),
            respond(200, {"total_slots": 0}),
            reset,
        ],
        ids=["500", "not-json", "not-object", "zero", "reset"],
    )
    async def test_unknown_slots_do_not_fail_the_probe(self, props: Script) -> None:
        """A node that is ready but whose /props is unusable is ready with unknown slots."""
        probed = await probe({"/health": OK, "/props": props})
        assert probed == Probe("ready", kind="llama_server", slots=None)

    async def test_loading_model(self) -> None:
        """503 on /health means llama-server is up but still loading the model."""
        probed = await probe({"/health": respond(503, {"error": {"message": "Loading"}})})
        assert probed.state == "loading"

    async def test_llama_cpp_python_has_no_health_endpoint(self) -> None:
        """404 on /health is llama_cpp.server: ready, with its single slot."""
        probed = await probe({"/health": respond(404, {"detail": "Not Found"})})
        assert probed == Probe("ready", kind="llama_cpp_server", slots=1)

    async def test_server_error_is_down(self) -> None:
        """A 5xx on /health is a node that cannot serve."""
        probed = await probe({"/health": respond(500, b"")})
        assert probed == Probe("down", error="health check answered 500")

    async def test_connection_error_is_down(self) -> None:
        """An unreachable node is down, with the reason kept for the cluster view."""
        async with node_at(f"http://127.0.0.1:{free_port()}") as node:
            probed = await node.probe(1.0)
        assert probed.state == "down"
        assert "cannot connect" in probed.error

    async def test_no_answer_in_time_is_down(self) -> None:
        """A /health that does not answer within the probe's timeout is down."""
        async with asyncio.timeout(1):
            probed = await probe({"/health": hang}, timeout=0.1)
        assert probed.state == "down"
        assert "GET /health" in probed.error
