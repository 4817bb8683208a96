"""Tests for backends.http: error mapping, and HttpNode against httpx.MockTransport."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from backends.base import ChatRequest, Chunk, Served
from backends.config import Node, Timeouts
from backends.errors import (
    ContextLengthExceeded,
    NodeOverloaded,
    NodeProtocolError,
    NodeRejected,
    NodeServerError,
    NodeTimeout,
    NodeUnreachable,
    RetryableNodeError,
)
from backends.http import HttpNode, Probe, status_error
from backends.sse import encode_comment, encode_data

pytestmark = pytest.mark.anyio
Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]
SPEC = Node(name="n1", member="qwen", url="http://node:8080/", api_key="sekret")
REQUEST = ChatRequest({"messages": [{"role": "user", "content": "hi"}], "temperature": 0.5})
ROLE = {"choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
USAGE = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
DONE = encode_data("[DONE]")
KEEP_ALIVE = encode_comment("keep-alive")


def content(text: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def frame(chunk: dict[str, Any]) -> bytes:
    return encode_data(json.dumps(chunk))


def error_json(message: str, code: Any = None, kind: str = "invalid_request_error") -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


class Body(httpx.AsyncByteStream):
    """A response body sent piece by piece; a float is a pause in seconds."""

    def __init__(self, *parts: bytes | float | Exception) -> None:
        self.parts = parts
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            if isinstance(part, Exception):
                raise part
            if isinstance(part, float):
                await asyncio.sleep(part)
            else:
                yield part

    async def aclose(self) -> None:
        self.closed = True


def answer(*parts: bytes | float | Exception, status: int = 200, **headers: str) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, stream=Body(*parts))

    return handler


@asynccontextmanager
async def http_node(handler: Handler, **timeouts: float) -> AsyncIterator[HttpNode]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        yield HttpNode(SPEC, client, Timeouts(**timeouts))


async def collect(handler: Handler, **timeouts: float) -> list[Chunk]:
    async with http_node(handler, **timeouts) as node, node.stream(REQUEST, Served()) as chunks:
        return [chunk async for chunk in chunks]


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


class TestRequest:
    async def test_sends_a_streaming_request_for_the_member(self) -> None:
        """The node is asked for a stream with usage, under its member's name, with the key."""
        seen: list[httpx.Request] = []

        async def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(200, stream=Body(DONE))

        assert await collect(handler) == []
        request = seen[0]
        assert str(request.url) == "http://node:8080/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sekret"
        assert json.loads(request.content) == {
            **REQUEST.body,
            "model": "qwen",
            "stream": True,
            "stream_options": {"include_usage": True},
        }


class TestStream:
    async def test_parses_chunks_until_done(self) -> None:
        """Every data frame before [DONE] arrives as a chunk, keep-alives skipped."""
        handler = answer(
            frame(ROLE), KEEP_ALIVE, frame(content("Hel")), frame(content("lo")),
            frame(FINISH), frame(USAGE), DONE,
        )  # fmt: skip
        chunks = await collect(handler)
        assert [c.data for c in chunks] == [ROLE, content("Hel"), content("lo"), FINISH, USAGE]
        assert "".join(c.content for c in chunks) == "Hello"
        assert chunks[-1].usage == USAGE["usage"]

    async def test_frames_split_across_network_reads(self) -> None:
        """Frames cut at arbitrary byte boundaries are reassembled."""
        wire = frame(content("añ€")) + DONE
        chunks = await collect(answer(*(wire[i : i + 3] for i in range(0, len(wire), 3))))
        assert [c.content for c in chunks] == ["añ€"]

    async def test_response_is_closed_when_the_caller_leaves_early(self) -> None:
        """Leaving the block mid-stream closes the upstream response (freeing the slot)."""
        body = Body(frame(content("a")), frame(content("b")), DONE)

        async def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(200, stream=body)

        async with http_node(handler) as node, node.stream(REQUEST, Served()) as chunks:
            async for _ in chunks:
                break
        assert body.closed

    async def test_stream_without_done_is_a_protocol_error(self) -> None:
        """A stream that ends without [DONE] was cut off: NodeProtocolError."""
        with pytest.raises(NodeProtocolError, match="without \\[DONE\\]"):
            await collect(answer(frame(content("a"))))

    @pytest.mark.parametrize("payload", ["{not json", "[1, 2]", '"text"'])
    async def test_malformed_chunk_is_a_protocol_error(self, payload: str) -> None:
        """A data frame that is not a JSON object is NodeProtocolError."""
        with pytest.raises(NodeProtocolError):
            await collect(answer(encode_data(payload), DONE))

    async def test_error_frame_is_a_server_error(self) -> None:
        """An error object sent mid-stream becomes NodeServerError with its message."""
        handler = answer(frame(content("a")), frame({"error": {"message": "slot crashed"}}), DONE)
        with pytest.raises(NodeServerError, match="slot crashed"):
            await collect(handler)

    async def test_bare_error_line_is_a_server_error(self) -> None:
        """Older llama-server builds send ``error:`` lines; they fail the stream too."""
        handler = answer(b'error: {"error": {"message": "kv cache full"}}\n\n', DONE)
        with pytest.raises(NodeServerError, match="kv cache full"):
            await collect(handler)

    async def test_read_error_mid_stream_is_unreachable(self) -> None:
        """A connection lost while streaming is NodeUnreachable."""
        handler = answer(frame(content("a")), httpx.ReadError("reset by peer"))
        with pytest.raises(NodeUnreachable, match="connection lost"):
            await collect(handler)


class TestTimeouts:
    async def test_no_headers_before_first_token_limit(self) -> None:
        """A node that does not even answer with headers in time is NodeTimeout."""

        async def handler(request: httpx.Request) -> httpx.Response:
            await asyncio.sleep(1)
            return httpx.Response(200, stream=Body(DONE))

        with pytest.raises(NodeTimeout):
            await collect(handler, first_token=0.05)

    async def test_no_content_before_first_token_limit(self) -> None:
        """Headers and a role chunk are not an answer: the first-token limit still fires."""
        handler = answer(frame(ROLE), KEEP_ALIVE, 1.0, frame(content("late")), DONE)
        with pytest.raises(NodeTimeout, match="no content"):
            await collect(handler, first_token=0.05)

    async def test_keep_alives_do_not_reset_the_stall_clock(self) -> None:
        """A node that only sends comments after its first token has stalled."""
        pings = [part for _ in range(10) for part in (0.03, KEEP_ALIVE)]
        handler = answer(frame(content("a")), *pings, frame(content("b")), DONE)
        with pytest.raises(NodeTimeout):
            await collect(handler, stall=0.15)

    async def test_non_content_chunks_do_not_reset_the_stall_clock(self) -> None:
        """Chunks without text, reasoning or tool calls are not progress."""
        empties = [part for _ in range(10) for part in (0.03, frame(ROLE))]
        handler = answer(frame(content("a")), *empties, frame(content("b")), DONE)
        with pytest.raises(NodeTimeout):
            await collect(handler, stall=0.15)

    async def test_steady_content_outlasts_the_stall_limit(self) -> None:
        """Content chunks reset the stall clock, so a slow but steady answer completes."""
        steady = [part for i in range(8) for part in (0.03, frame(content(str(i))))]
        chunks = await collect(answer(*steady, DONE), stall=0.15)
        assert len(chunks) == 8

    async def test_total_limit_ends_a_steady_answer(self) -> None:
        """The total limit fires even while content keeps coming."""
        steady = [part for i in range(20) for part in (0.02, frame(content(str(i))))]
        with pytest.raises(NodeTimeout):
            await collect(answer(*steady, DONE), total=0.15)


class TestStatus:
    async def test_429_carries_retry_after(self) -> None:
        """A busy node's Retry-After reaches NodeOverloaded.retry_after."""
        handler = answer(error_json("busy"), status=429, **{"retry-after": "7"})
        with pytest.raises(NodeOverloaded) as caught:
            await collect(handler)
        assert caught.value.retry_after == 7.0

    async def test_retry_after_ms_is_preferred(self) -> None:
        """``retry-after-ms`` is the finer hint and wins over ``retry-after``."""
        headers = {"retry-after-ms": "1500", "retry-after": "9"}
        with pytest.raises(NodeOverloaded) as caught:
            await collect(answer(b"", status=503, **headers))
        assert caught.value.retry_after == 1.5

    async def test_unparsable_retry_after_is_ignored(self) -> None:
        """An HTTP-date or garbage Retry-After gives no hint rather than an error."""
        handler = answer(b"", status=429, **{"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
        with pytest.raises(NodeOverloaded) as caught:
            await collect(handler)
        assert caught.value.retry_after is None

    async def test_context_length_exceeded(self) -> None:
        """A 400 naming the context overflow is ContextLengthExceeded."""
        body = error_json("prompt too long", code="context_length_exceeded")
        with pytest.raises(ContextLengthExceeded, match="prompt too long"):
            await collect(answer(body, status=400))

    async def test_error_response_is_closed(self) -> None:
        """An error answer's body is read and the response closed."""
        body = Body(error_json("boom"))

        async def handler(request: httpx.Request) -> httpx.Response:
            return httpx.Response(500, stream=body)

        with pytest.raises(NodeServerError, match="boom"):
            await collect(handler)
        assert body.closed

    @pytest.mark.parametrize(
        ("failure", "expected"),
        [
            (httpx.ConnectError("refused"), NodeUnreachable),
            (httpx.ConnectTimeout("slow"), NodeTimeout),
            (httpx.ReadTimeout("slow"), NodeTimeout),
            (httpx.RemoteProtocolError("garbage"), NodeUnreachable),
        ],
    )
    async def test_transport_failures_are_translated(
        self, failure: Exception, expected: type[Exception]
    ) -> None:
        """httpx exceptions never escape: each becomes its node error."""

        async def handler(request: httpx.Request) -> httpx.Response:
            raise failure

        with pytest.raises(expected):
            await collect(handler)


def routes(**answers: httpx.Response | Exception) -> Handler:
    """A handler answering by path (``health``, ``props``)."""

    async def handler(request: httpx.Request) -> httpx.Response:
        outcome = answers[request.url.path.strip("/")]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return handler


async def probe(handler: Handler) -> Probe:
    async with http_node(handler) as node:
        return await node.probe(1.0)


class TestProbe:
    async def test_llama_server_ready_reports_its_slots(self) -> None:
        """200 on /health is llama-server; /props tells the slot count."""
        handler = routes(
            health=httpx.Response(200, json={"status": "ok"}),
            props=httpx.Response(200, json={"total_slots": 4}),
        )
        assert await probe(handler) == Probe("ready", kind="llama_server", slots=4)

    @pytest.mark.parametrize(
        "props",
        [
            httpx.Response(500, text="no"),
            httpx.Response(200, text="not json"),
            httpx.Response(200, json=[4]),
            httpx.Response(200, json={"total_slots": 0}),
            httpx.ConnectError("gone"),
        ],
    )
    async def test_unknown_slots_do_not_fail_the_probe(
        self, props: httpx.Response | Exception
    ) -> None:
        """A node that is ready but whose /props is unusable is ready with unknown slots."""
        handler = routes(health=httpx.Response(200, json={"status": "ok"}), props=props)
        assert await probe(handler) == Probe("ready", kind="llama_server", slots=None)

    async def test_loading_model(self) -> None:
        """503 on /health means llama-server is up but still loading the model."""
        handler = routes(health=httpx.Response(503, json={"error": {"message": "Loading"}}))
        assert (await probe(handler)).state == "loading"

    async def test_llama_cpp_python_has_no_health_endpoint(self) -> None:
        """404 on /health is llama_cpp.server: ready, with its single slot."""
        handler = routes(health=httpx.Response(404, json={"detail": "Not Found"}))
        assert await probe(handler) == Probe("ready", kind="llama_cpp_server", slots=1)

    async def test_connection_error_is_down(self) -> None:
        """An unreachable node is down, with the reason kept for the cluster view."""
        probed = await probe(routes(health=httpx.ConnectError("connection refused")))
        assert probed.state == "down"
        assert "connection refused" in probed.error
