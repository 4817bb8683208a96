"""A minimal, fast OpenAI-compatible upstream for benchmarks: ``python -m bench.upstream``.

It answers like a llama-server that has already decided what to say: every answer is ``max_tokens``
copies of one short token (4 when the request names none), as one JSON body or as SSE chunks
(role chunk, one chunk per token, finish chunk, usage chunk when asked, ``[DONE]``). Answers are
built once per shape and cached, and the server is an ``asyncio.Protocol`` with no framework, so
it costs a few tens of microseconds per request and is never what a benchmark measures.

Routes: ``POST /v1/chat/completions``, ``GET /health`` (200, like llama-server when ready),
``GET /props`` (``total_slots``); anything else is 404. HTTP/1.1 with keep-alive.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable
from functools import lru_cache
from typing import Any, NamedTuple

import msgspec

TOKEN = "tok "
DEFAULT_TOKENS = 4
MAX_TOKENS = 100_000
SLOTS = 256
_HEAD_END = b"\r\n\r\n"
_JSON = b"application/json"


def _head(status: str, media: bytes, length: int | None) -> bytes:
    framing = b"transfer-encoding: chunked" if length is None else b"content-length: %d" % length
    return b"HTTP/1.1 %s\r\ncontent-type: %s\r\n%s\r\n\r\n" % (status.encode(), media, framing)


def _json_response(status: str, body: Any) -> bytes:
    data = msgspec.json.encode(body)
    return _head(status, _JSON, len(data)) + data


def _chunk(frame: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(frame), frame)


def _usage(tokens: int) -> dict[str, int]:
    return {"prompt_tokens": 8, "completion_tokens": tokens, "total_tokens": 8 + tokens}


@lru_cache(maxsize=256)
def whole_body(tokens: int) -> bytes:
    """The JSON body of the non-streaming answer with ``tokens`` tokens."""
    message = {"role": "assistant", "content": TOKEN * tokens}
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": _usage(tokens),
    }
    return msgspec.json.encode(body)


@lru_cache(maxsize=256)
def whole_answer(tokens: int) -> bytes:
    """The non-streaming response with ``tokens`` tokens."""
    body = whole_body(tokens)
    return _head("200 OK", _JSON, len(body)) + body


def _delta(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


@lru_cache(maxsize=256)
def stream_frames(tokens: int, include_usage: bool) -> tuple[bytes, ...]:
    """The SSE events of a streamed answer: role, one per token, the end, usage, ``[DONE]``."""
    events = [_delta({"role": "assistant"})]
    events.extend(_delta({"content": TOKEN}) for _ in range(tokens))
    events.append(_delta({}, "stop"))
    if include_usage:
        events.append({**_delta({}), "choices": [], "usage": _usage(tokens)})
    frames = [b"data: " + msgspec.json.encode(event) + b"\n\n" for event in events]
    return (*frames, b"data: [DONE]\n\n")


@lru_cache(maxsize=256)
def streamed_answer(tokens: int, include_usage: bool) -> tuple[bytes, ...]:
    """The streaming response as separate writes: head, one chunk per event, the last one
    carrying the end of the chunked body."""
    *frames, done = stream_frames(tokens, include_usage)
    parts = [_head("200 OK", b"text/event-stream", None)]
    parts.extend(_chunk(frame) for frame in frames)
    parts.append(_chunk(done) + b"0\r\n\r\n")
    return tuple(parts)


_HEALTH = _json_response("200 OK", {"status": "ok"})
_PROPS = _json_response("200 OK", {"total_slots": SLOTS})
_NOT_FOUND = _json_response("404 Not Found", {"error": {"code": 404, "message": "not found"}})
_BAD = _json_response("400 Bad Request", {"error": {"code": 400, "message": "bad request"}})


class Ask(NamedTuple):
    """What a chat request asks of the upstream: how many tokens, streamed or not."""

    tokens: int
    stream: bool
    include_usage: bool


def read_ask(body: bytes) -> Ask | None:
    """The request's ``max_tokens``, ``stream`` and ``include_usage``; None if unreadable."""
    try:
        request = msgspec.json.decode(body)
        tokens = int(request.get("max_tokens") or DEFAULT_TOKENS)
        options = request.get("stream_options") or {}
        usage = bool(options.get("include_usage"))
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return None
    return Ask(max(1, min(tokens, MAX_TOKENS)), bool(request.get("stream")), usage)


def _chat(body: bytes) -> tuple[bytes, ...]:
    ask = read_ask(body)
    if ask is None:
        return (_BAD,)
    if not ask.stream:
        return (whole_answer(ask.tokens),)
    return streamed_answer(ask.tokens, ask.include_usage)


def respond(method: bytes, path: bytes, body: bytes) -> tuple[bytes, ...]:
    """The writes that answer one request."""
    path = path.split(b"?", 1)[0]
    if method == b"POST" and path == b"/v1/chat/completions":
        return _chat(body)
    if method == b"GET" and path == b"/health":
        return (_HEALTH,)
    if method == b"GET" and path == b"/props":
        return (_PROPS,)
    return (_NOT_FOUND,)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 on one connection: requests are answered in order as they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while self._transport is not None and self._answer_one():
            pass

    def _answer_one(self) -> bool:
        end = self._buffer.find(_HEAD_END)
        if end < 0:
            return False
        head = bytes(self._buffer[:end])
        try:
            length = _content_length(head)
        except ValueError:
            length = -1
        if length < 0:
            self._close(_BAD)
            return False
        start = end + len(_HEAD_END)
        if len(self._buffer) < start + length:
            return False
        body = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        method, path, *_ = [*head.split(b"\r\n", 1)[0].split(b" "), b"", b""]
        assert self._transport is not None
        for part in respond(method, path, body):
            self._transport.write(part)
        return True

    def _close(self, last: bytes) -> None:
        assert self._transport is not None
        self._transport.write(last)
        self._transport.close()
        self._transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


async def serve_until_signalled(
    protocol: Callable[[], asyncio.BaseProtocol], host: str, port: int
) -> None:
    """Serve ``protocol`` on ``host:port`` until SIGINT or SIGTERM (the bench's servers)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(protocol, host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


async def serve(host: str, port: int) -> None:
    """Serve until SIGINT or SIGTERM."""
    await serve_until_signalled(UpstreamProtocol, host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
