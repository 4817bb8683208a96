"""The fault injector itself behaves: each scenario, observed with plain httpx."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from .upstream import FaultServer, Scenario

pytestmark = pytest.mark.anyio
CHAT = "/v1/chat/completions"
SHORT = httpx.Timeout(2.0, read=0.3)


def body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "say hello"}]
    return {"model": "m", "messages": messages, "stream": stream, **extra}


def frames(lines: list[str]) -> list[dict[str, Any]]:
    """The JSON payloads of the ``data:`` lines (``[DONE]`` excluded)."""
    return [json.loads(line[6:]) for line in lines if line.startswith("data: {")]


def text(lines: list[str]) -> str:
    chunks = [f for f in frames(lines) if f.get("choices")]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)


async def collect(response: httpx.Response, into: list[str]) -> None:
    async for line in response.aiter_lines():
        if line:
            into.append(line)


async def until(condition: Any, timeout: float = 2.0) -> None:
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.01)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=SHORT) as client:
        yield client


async def test_healthy_stream_is_openai_sse(client: httpx.AsyncClient) -> None:
    """A healthy stream: role delta, one delta per word, finish_reason stop, then [DONE]."""
    lines: list[str] = []
    async with FaultServer("a") as node, client.stream("POST", node.url + CHAT, json=body()) as r:
        await collect(r, lines)
    assert r.headers["content-type"] == "text/event-stream"
    assert r.headers["transfer-encoding"] == "chunked"
    chunks = frames(lines)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == [
        "hello",
        " from",
        " a",
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert lines[-1] == "data: [DONE]"
    assert node.requests == 1
    assert node.last_body == body()


async def test_stream_usage_chunk_when_asked(client: httpx.AsyncClient) -> None:
    """With include_usage, the last chunk before [DONE] has no choices and carries usage."""
    lines: list[str] = []
    request = body(stream_options={"include_usage": True})
    async with FaultServer("a") as node, client.stream("POST", node.url + CHAT, json=request) as r:
        await collect(r, lines)
    chunks = frames(lines)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert all(c["usage"] is None for c in chunks[:-1])


async def test_healthy_completion_reuses_the_connection(client: httpx.AsyncClient) -> None:
    """Non-streaming answers are chat.completion JSON with usage, over one kept-alive socket."""
    async with FaultServer("a") as node:
        answers = [await client.post(node.url + CHAT, json=body(False)) for _ in range(3)]
        models = await client.get(node.url + "/v1/models")
    assert [a.status_code for a in answers] == [200, 200, 200]
    answer = answers[0].json()
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == "hello from a"
    assert answer["usage"]["completion_tokens"] == 3
    assert models.json()["data"][0]["id"] == "a"
    assert node.connections == 1


async def test_health_ok_loading_and_unreachable(client: httpx.AsyncClient) -> None:
    """/health answers 200 ok, or the forced status, or resets, or hangs."""
    async with FaultServer("a") as node:
        ok = await client.get(node.url + "/health")
        node.health_status = 503
        loading = await client.get(node.url + "/health")
        node.health_status = "reset"
        with pytest.raises(httpx.ReadError):
            await client.get(node.url + "/health")
        node.health_status = "hang"
        with pytest.raises(httpx.ReadTimeout):
            await client.get(node.url + "/health")
    assert (ok.status_code, ok.json()) == (200, {"status": "ok"})
    assert loading.status_code == 503
    assert loading.json()["error"]["message"] == "Loading model"
    assert node.requests == 0


async def test_rate_limited_once(client: httpx.AsyncClient) -> None:
    """The first chat request gets 429 with Retry-After, the next one is served."""
    async with FaultServer("a", Scenario.RATE_LIMITED_ONCE) as node:
        first = await client.post(node.url + CHAT, json=body(False))
        second = await client.post(node.url + CHAT, json=body(False))
    assert (first.status_code, first.headers["retry-after"]) == (429, "1")
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert second.status_code == 200
    assert [r.fault for r in node.records] == [Scenario.RATE_LIMITED_ONCE, Scenario.HEALTHY]


async def test_rate_limited_always(client: httpx.AsyncClient) -> None:
    """Every chat request gets 429 with the configured Retry-After."""
    async with FaultServer("a", Scenario.RATE_LIMITED) as node:
        node.retry_after = 7
        answers = [await client.post(node.url + CHAT, json=body(False)) for _ in range(2)]
    assert [(a.status_code, a.headers["retry-after"]) for a in answers] == [(429, "7")] * 2


async def test_server_error_once_rearms_on_scenario_change(client: httpx.AsyncClient) -> None:
    """500 once, then healthy; setting the scenario again re-arms the fault."""
    async with FaultServer("a", Scenario.SERVER_ERROR_ONCE) as node:
        codes = [(await client.post(node.url + CHAT, json=body(False))).status_code]
        codes.append((await client.post(node.url + CHAT, json=body(False))).status_code)
        node.scenario = Scenario.SERVER_ERROR_ONCE
        codes.append((await client.post(node.url + CHAT, json=body(False))).status_code)
    assert codes == [500, 200, 500]


async def test_unavailable(client: httpx.AsyncClient) -> None:
    """Every chat request gets 503 "Loading model" while /health stays 200."""
    async with FaultServer("a", Scenario.UNAVAILABLE) as node:
        answers = [await client.post(node.url + CHAT, json=body()) for _ in range(2)]
        health = await client.get(node.url + "/health")
    assert [a.status_code for a in answers] == [503, 503]
    assert health.status_code == 200


async def test_reset(client: httpx.AsyncClient) -> None:
    """The connection is reset (RST) once the request is read."""
    async with FaultServer("a", Scenario.RESET) as node:
        with pytest.raises(httpx.ReadError):
            await client.post(node.url + CHAT, json=body())
    assert node.requests == 1


async def test_no_response_until_the_client_leaves(client: httpx.AsyncClient) -> None:
    """No byte is ever sent; the client's read timeout fires and its leaving is recorded."""
    async with FaultServer("a", Scenario.NO_RESPONSE) as node:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(node.url + CHAT, json=body())
        await until(lambda: node.cancelled == 1)


async def test_slow_first_token(client: httpx.AsyncClient) -> None:
    """The role chunk comes at once, the first content token only after `delay`."""
    seen: list[tuple[float, str]] = []
    async with (
        FaultServer("a", Scenario.SLOW_FIRST_TOKEN, delay=0.5) as node,
        client.stream("POST", node.url + CHAT, json=body(), timeout=5) as r,
    ):
        async for line in r.aiter_lines():
            if line:
                seen.append((time.monotonic(), line))
    lines = [line for _, line in seen]
    assert seen[1][0] - seen[0][0] >= 0.45
    assert (text(lines), lines[-1]) == ("hello from a", "data: [DONE]")


async def test_slow_first_token_client_leaves(client: httpx.AsyncClient) -> None:
    """A client that gives up during the wait is counted as cancelled."""
    async with (
        FaultServer("a", Scenario.SLOW_FIRST_TOKEN) as node,
        client.stream("POST", node.url + CHAT, json=body()) as r,
    ):
        async for line in r.aiter_lines():
            if line:
                break
        await r.aclose()
        await until(lambda: node.cancelled == 1)


async def test_cut(client: httpx.AsyncClient) -> None:
    """After `fault_after` content chunks the connection closes without the final 0-chunk."""
    lines: list[str] = []
    async with FaultServer("a", Scenario.CUT, fault_after=2) as node:
        with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
            async with client.stream("POST", node.url + CHAT, json=body()) as r:
                await collect(r, lines)
    assert text(lines) == "hello from"
    assert "data: [DONE]" not in lines


async def test_cut_non_streaming(client: httpx.AsyncClient) -> None:
    """A non-streaming answer is cut after half its Content-Length."""
    async with FaultServer("a", Scenario.CUT) as node:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post(node.url + CHAT, json=body(False))


async def test_stall_sends_only_keepalives(client: httpx.AsyncClient) -> None:
    """After the first chunks only `: ping` comments arrive, so a read timeout never fires."""
    lines: list[str] = []
    async with (
        FaultServer("a", Scenario.STALL, ping_interval=0.05, fault_after=1) as node,
        client.stream("POST", node.url + CHAT, json=body()) as r,
    ):
        async for line in r.aiter_lines():
            lines += [line] if line else []
            if lines.count(": ping") == 5:
                break
        await r.aclose()
        await until(lambda: node.cancelled == 1)
    assert text(lines) == "hello"
    assert lines[-5:] == [": ping"] * 5


async def test_malformed(client: httpx.AsyncClient) -> None:
    """One `data: {not json` frame arrives mid-stream; the rest of the stream is intact."""
    lines: list[str] = []
    async with (
        FaultServer("a", Scenario.MALFORMED) as node,
        client.stream("POST", node.url + CHAT, json=body()) as r,
    ):
        await collect(r, lines)
    assert lines.index("data: {not json") == 3
    with pytest.raises(json.JSONDecodeError):
        frames(lines)
    assert lines[-1] == "data: [DONE]"


async def test_no_done(client: httpx.AsyncClient) -> None:
    """The stream finishes and ends cleanly, but without `data: [DONE]`."""
    lines: list[str] = []
    async with (
        FaultServer("a", Scenario.NO_DONE) as node,
        client.stream("POST", node.url + CHAT, json=body()) as r,
    ):
        await collect(r, lines)
    assert frames(lines)[-1]["choices"][0]["finish_reason"] == "stop"
    assert text(lines) == "hello from a"
    assert "data: [DONE]" not in lines


async def test_context_length(client: httpx.AsyncClient) -> None:
    """400 with the OpenAI error body of llama_cpp.server."""
    async with FaultServer("a", Scenario.CONTEXT_LENGTH) as node:
        answer = await client.post(node.url + CHAT, json=body())
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert (error["code"], error["type"]) == ("context_length_exceeded", "invalid_request_error")


async def test_error_frame(client: httpx.AsyncClient) -> None:
    """A `data: {"error": ...}` frame follows the first chunks; the body then ends cleanly."""
    lines: list[str] = []
    async with (
        FaultServer("a", Scenario.ERROR_FRAME) as node,
        client.stream("POST", node.url + CHAT, json=body()) as r,
    ):
        await collect(r, lines)
    assert r.status_code == 200
    assert frames(lines)[-1]["error"]["type"] == "server_error"
    assert text(lines) == "hello from"


async def test_flapping_and_fail_next(client: httpx.AsyncClient) -> None:
    """FLAPPING resets `flap[0]` requests then serves `flap[1]`; fail_next forces resets."""

    async def outcome(node: FaultServer) -> str:
        try:
            return str((await client.post(node.url + CHAT, json=body(False))).status_code)
        except httpx.ReadError:
            return "reset"

    async with FaultServer("a", Scenario.FLAPPING) as node:
        node.flap = (2, 1)
        flapping = [await outcome(node) for _ in range(6)]
        node.scenario = Scenario.HEALTHY
        node.fail_next(2)
        forced = [await outcome(node) for _ in range(3)]
    assert flapping == ["reset", "reset", "200"] * 2
    assert forced == ["reset", "reset", "200"]


async def test_stop_ends_open_connections() -> None:
    """Stopping closes hung and stalled connections; their clients see the connection end."""
    errors: list[type[Exception]] = []

    async def call(url: str, stream: bool) -> None:
        async with httpx.AsyncClient(timeout=5) as c:
            try:
                (await c.post(url + CHAT, json=body(stream))).read()
            except httpx.TransportError as exc:
                errors.append(type(exc))

    hung = FaultServer("a", Scenario.NO_RESPONSE)
    stalled = FaultServer("b", Scenario.STALL, ping_interval=0.05)
    async with hung, stalled, anyio.create_task_group() as tg:
        tg.start_soon(call, hung.url, False)
        tg.start_soon(call, stalled.url, True)
        await until(lambda: hung.requests == stalled.requests == 1)
        await hung.stop()
        await stalled.stop()
    assert len(errors) == 2


def test_in_thread_serves_sync_clients() -> None:
    """In thread mode a synchronous client is served; afterwards the port is closed."""
    with FaultServer("t").in_thread() as node, httpx.Client(timeout=2) as c:
        assert c.get(node.url + "/health").json() == {"status": "ok"}
        node.scenario = Scenario.RATE_LIMITED_ONCE
        codes = [c.post(node.url + CHAT, json=body(False)).status_code for _ in range(2)]
    assert codes == [429, 200]
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", node.port)):
        pass
