"""Just enough HTTP/1.1 and SSE on raw asyncio streams for :mod:`tests.faults.upstream`.

Requests: request line, headers, ``Content-Length`` body; sequential keep-alive. Responses:
``Content-Length`` bodies or chunked SSE. Every write and wait notices a client that left and
raises :class:`ClientGone`; :meth:`Connection.reset` aborts with a TCP RST.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

_POLL = 0.02


class ClientGone(Exception):
    """The client closed its side before the response was complete."""


@dataclass
class Request:
    """One parsed HTTP/1.1 request; ``headers`` keys are lower-case."""

    method: str
    path: str
    version: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        """Whether the client allows another request on this connection."""
        connection = self.headers.get("connection", "").lower()
        return connection == "keep-alive" if self.version == "HTTP/1.0" else connection != "close"


def error_body(message: str, type_: str, code: str | int | None) -> dict[str, Any]:
    """The OpenAI error body."""
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def context_length_error(prompt_tokens: int, n_ctx: int = 2048) -> dict[str, Any]:
    """The 400 body llama_cpp.server sends when the prompt does not fit the context."""
    asked = n_ctx + prompt_tokens
    message = (
        f"This model's maximum context length is {n_ctx} tokens. However, you requested "
        f"{asked} tokens ({asked} in the messages, 0 in the completion). "
        "Please reduce the length of the messages or completion."
    )
    body = error_body(message, "invalid_request_error", "context_length_exceeded")
    body["error"]["param"] = "messages"
    return body


def completion(model: str, text: str, usage: dict[str, int]) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` answering ``text``."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": usage,
    }


class Connection:
    """One accepted TCP connection; every wait and write notices a client that left."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def gone(self) -> bool:
        reader = self.reader
        return self.writer.is_closing() or reader.at_eof() or reader.exception() is not None

    async def read_request(self) -> Request | None:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return Request(method, target.split("?", 1)[0], version, headers, body)

    async def send(self, data: bytes) -> None:
        if self.gone():
            raise ClientGone
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            raise ClientGone from exc

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (may be ``inf``); raise :class:`ClientGone` once the client leaves."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self.gone():
                raise ClientGone
            await asyncio.sleep(min(left, _POLL))

    async def head(self, status: int, headers: dict[str, str], keep_alive: bool) -> None:
        lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}"]
        headers = {**headers, "Connection": "keep-alive" if keep_alive else "close"}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def respond(
        self, status: int, body: object, keep_alive: bool, extra: dict[str, str] | None = None
    ) -> bool:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        await self.head(status, {**headers, **(extra or {})}, keep_alive)
        await self.send(data)
        return keep_alive

    def reset(self) -> None:
        """Abort with SO_LINGER (1, 0), so the kernel sends RST instead of FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


class SseWriter:
    """Writes one ``chat.completion.chunk`` stream as SSE over chunked transfer encoding (with
    ``text``, a ``text_completion`` stream, as ``/v1/completions`` answers)."""

    def __init__(
        self, conn: Connection, model: str, include_usage: bool, *, text: bool = False
    ) -> None:
        self.conn, self.model, self.include_usage = conn, model, include_usage
        self.text = text
        self.id = f"{'cmpl' if text else 'chatcmpl'}-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())

    async def start(self, keep_alive: bool) -> None:
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        await self.conn.head(200, {**headers, "Transfer-Encoding": "chunked"}, keep_alive)

    async def raw(self, text: str) -> None:
        data = text.encode()
        await self.conn.send(b"%x\r\n%s\r\n" % (len(data), data))

    async def frame(self, payload: str) -> None:
        await self.raw(f"data: {payload}\n\n")

    async def chunk(
        self, delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None
    ) -> None:
        choices = [] if usage else [{"index": 0, "delta": delta, "finish_reason": finish}]
        if self.text:
            text = delta.get("content") or ""
            choices = [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}]
        body: dict[str, Any] = {
            "id": self.id,
            "object": "text_completion" if self.text else "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            body["usage"] = usage
        await self.frame(json.dumps(body))

    async def end(self) -> None:
        await self.conn.send(b"0\r\n\r\n")
