"""The load generator: workers on raw keep-alive HTTP/1.1 connections, timing every request.

A benchmark client must cost far less than what it measures, and here it shares two cores with
the gateway and the upstream, so it speaks HTTP itself on asyncio streams (pre-encoded requests,
no client library). Each :class:`Sample` holds the time to the whole answer, the time to the
first content token and how many content tokens arrived (SSE chunks or the JSON answer's
``completion_tokens``), so a relay that lost or merged chunks shows up as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

PROMPT = "Say hello to the benchmark."
_decode = msgspec.json.Decoder()
_FAILURES = (OSError, EOFError, asyncio.LimitOverrunError, ValueError, LookupError, TypeError)


class _Stale(ConnectionError):
    """The server had closed the connection before the request was sent."""


@dataclass(frozen=True, slots=True)
class Target:
    """An OpenAI-compatible endpoint on loopback."""

    name: str
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: seconds to the whole answer and to its first token; tokens received."""

    total: float
    ttft: float
    tokens: int
    status: int
    first_to_last: float = 0.0


def chat_request(target: Target, model: str, *, stream: bool, tokens: int) -> bytes:
    """A complete, pre-encoded `POST /v1/chat/completions` asking for ``tokens`` tokens."""
    body = msgspec.json.encode(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "max_tokens": tokens,
            "stream": stream,
        }
    )
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: {target.host}:{target.port}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _content(payload: bytes) -> bool:
    data = _decode.decode(payload)
    choices = data.get("choices") or [{}]
    delta = choices[0].get("delta") or {}
    return bool(delta.get("content"))


@dataclass(slots=True)
class _SseTokens:
    """Counts content chunks in an SSE body fed piece by piece; notes first and last times."""

    started: float
    buffer: bytes = b""
    tokens: int = 0
    first: float = 0.0
    last: float = 0.0
    done: bool = False

    def feed(self, data: bytes) -> None:
        *events, self.buffer = (self.buffer + data).split(b"\n\n")
        now = time.perf_counter()
        for event in events:
            payload = event.removeprefix(b"data: ")
            if payload == b"[DONE]":
                self.done = True
            elif event.startswith(b"data: ") and _content(payload):
                self.tokens += 1
                self.first = self.first or now
                self.last = now


class Connection:
    """One keep-alive connection; one request at a time."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        await self.close()
        self._reader, self._writer = await asyncio.open_connection(
            self.target.host, self.target.port
        )

    async def close(self) -> None:
        writer, self._writer, self._reader = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def exchange(self, request: bytes) -> Sample:
        """Send one request and read its whole answer.

        A kept-alive connection that the server closed while idle is reopened and the request
        sent again, as HTTP clients do; any other failure is the caller's.
        """
        if self._writer is not None:
            try:
                return await self._exchange(request)
            except _Stale:
                await self.close()
        await self.open()
        return await self._exchange(request)

    async def _exchange(self, request: bytes) -> Sample:
        assert self._reader is not None and self._writer is not None
        started = time.perf_counter()
        self._writer.write(request)
        try:
            head = await self._reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionResetError) as exc:
            if getattr(exc, "partial", b""):
                raise
            raise _Stale from exc
        status = int(head[9:12])
        headers = head.lower()
        if b"transfer-encoding: chunked" in headers:
            return await self._chunked(started, status)
        length = int(headers.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
        body = await self._reader.readexactly(length)
        total = time.perf_counter() - started
        return Sample(total, total, _whole_tokens(body) if status == 200 else 0, status)

    async def _chunked(self, started: float, status: int) -> Sample:
        assert self._reader is not None
        sse = _SseTokens(started)
        while True:
            size = int((await self._reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                break
            sse.feed((await self._reader.readexactly(size + 2))[:-2])
        total = time.perf_counter() - started
        tokens = sse.tokens if sse.done else 0
        ttft = (sse.first or time.perf_counter()) - started
        return Sample(total, ttft, tokens, status, sse.last - sse.first)


def _whole_tokens(body: bytes) -> int:
    data: Any = _decode.decode(body)
    message = data["choices"][0]["message"]
    return int(data["usage"]["completion_tokens"]) if message.get("content") else 0


@dataclass(slots=True)
class Phase:
    """What one burst of requests against one target produced."""

    samples: list[Sample] = field(default_factory=list)
    errors: int = 0
    wall: float = 0.0


async def open_connections(target: Target, count: int) -> list[Connection]:
    connections = [Connection(target) for _ in range(count)]
    await asyncio.gather(*(c.open() for c in connections))
    return connections


async def close_connections(connections: Sequence[Connection]) -> None:
    await asyncio.gather(*(c.close() for c in connections))


async def run_phase(
    connections: Sequence[Connection],
    requests: Sequence[bytes],
    count: int,
    phase: Phase | None = None,
) -> Phase:
    """``count`` requests spread over the connections (one worker each), cycling ``requests``.

    Samples go into ``phase`` as they complete (pass one to watch the progress).
    """
    phase = phase or Phase()
    issued = 0

    async def worker(connection: Connection) -> None:
        nonlocal issued
        while issued < count:
            request = requests[issued % len(requests)]
            issued += 1
            try:
                phase.samples.append(await connection.exchange(request))
            except _FAILURES:
                phase.errors += 1
                await connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    phase.wall = time.perf_counter() - started
    return phase
