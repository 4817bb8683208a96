"""One llama.cpp node over HTTP: the only module that talks httpx.

The node is always asked for a stream, even when the client wants a single JSON answer: a
stream can be cut off the moment the client goes away (freeing the node's slot), and the
first-token and stall limits apply to every request alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from backends.base import ChatRequest, Chunk, Served
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
)
from backends.sse import DONE, Event, aiter_events

_CONTEXT_CODES = {"context_length_exceeded", "exceed_context_size_error"}
_READ_TO_END = 0.5


@dataclass(frozen=True, slots=True)
class Probe:
    """What a health probe saw. ``state`` is ``ready``, ``loading`` or ``down``."""

    state: str
    kind: str = "unknown"
    slots: int | None = None
    error: str = ""


@contextmanager
def map_errors(node: str) -> Iterator[None]:
    """Translate httpx exceptions into the booagent tree; the one place that catches them."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise NodeTimeout(node, "connect timed out") from exc
    except httpx.TimeoutException as exc:
        raise NodeTimeout(node, f"timed out ({type(exc).__name__})") from exc
    except httpx.ConnectError as exc:
        raise NodeUnreachable(node, f"cannot connect: {exc}") from exc
    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
        raise NodeUnreachable(node, f"connection lost: {exc or type(exc).__name__}") from exc
    except httpx.HTTPError as exc:
        raise NodeUnreachable(node, f"{type(exc).__name__}: {exc}") from exc


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            return None
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


def _error_fields(body: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI or llama-server error body (or the raw text)."""
    try:
        error = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return body.decode(errors="replace")[:500] or "no body", None
    if not isinstance(error, Mapping):
        return str(error)[:500], None
    code = error.get("code")
    if code is None or isinstance(code, int):
        code = error.get("type") if isinstance(error.get("type"), str) else None
    return str(error.get("message", "")), code


def status_error(node: str, status: int, body: bytes, retry_after: float | None) -> NodeError:
    """The error for a non-200 node answer, chosen by status and error code."""
    message, code = _error_fields(body)
    if status in (408, 409, 429, 503):
        return NodeOverloaded(node, f"{status}: {message}", retry_after=retry_after)
    if status >= 500:
        return NodeServerError(node, f"{status}: {message}")
    if code in _CONTEXT_CODES or ("context" in message.lower() and status == 400):
        return ContextLengthExceeded(node, message, status_code=400)
    return NodeRejected(node, message, status_code=status, code=code)


def _event_error(node: str, event: Event) -> NodeError:
    message, _ = _error_fields(event.data.encode())
    if event.kind == "data":
        message = message or event.data[:200]
    return NodeServerError(node, f"error in stream: {message}")


def _parse_chunk(node: str, event: Event) -> Chunk:
    try:
        data = json.loads(event.data)
    except ValueError as exc:
        raise NodeProtocolError(node, f"malformed chunk: {event.data[:80]!r}") from exc
    if not isinstance(data, dict):
        raise NodeProtocolError(node, f"chunk is not an object: {event.data[:80]!r}")
    if "error" in data:
        raise _event_error(node, event)
    return Chunk(data)


class HttpNode:
    """A :class:`backends.base.Backend` for one llama.cpp server (either kind)."""

    def __init__(self, spec: Node, client: httpx.AsyncClient, timeouts: Timeouts) -> None:
        self.name = spec.name
        self.spec = spec
        self._client = client
        self._timeouts = timeouts
        self._base = spec.url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}

    def _payload(self, request: ChatRequest) -> dict[str, Any]:
        return {
            **request.body,
            "model": self.spec.member,
            "stream": True,
            "stream_options": {"include_usage": True},
        }

    @asynccontextmanager
    async def stream(
        self, request: ChatRequest, served: Served
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeouts.total
        first = loop.time() + self._timeouts.first_token
        timeout = httpx.Timeout(self._timeouts.total, connect=self._timeouts.connect)
        try:
            with map_errors(self.name):
                async with asyncio.timeout_at(min(first, deadline)):
                    response = await self._client.send(
                        self._client.build_request(
                            "POST",
                            f"{self._base}/v1/chat/completions",
                            json=self._payload(request),
                            headers=self._headers,
                            timeout=timeout,
                        ),
                        stream=True,
                    )
        except TimeoutError as exc:
            raise NodeTimeout(self.name, "no response before the time limit") from exc
        try:
            await self._raise_for_status(response)
            yield self._chunks(response, min(first, deadline), deadline)
        finally:
            await response.aclose()

    async def _raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code == 200:
            return
        with map_errors(self.name):
            body = await response.aread()
        raise status_error(self.name, response.status_code, body, _retry_after(response))

    async def _chunks(
        self, response: httpx.Response, first: float, deadline: float
    ) -> AsyncIterator[Chunk]:
        """Chunks until ``[DONE]``; the clock is reset by content chunks only."""
        loop = asyncio.get_running_loop()
        events = aiter_events(response.aiter_lines())
        limit = first
        while True:
            event = await self._next_event(events, limit)
            if event.kind == "error":
                raise _event_error(self.name, event)
            if event.data.strip() == DONE:
                await self._read_to_end(events)
                return
            chunk = _parse_chunk(self.name, event)
            if chunk.is_content:
                limit = min(loop.time() + self._timeouts.stall, deadline)
            yield chunk

    async def _next_event(self, events: AsyncIterator[Event], limit: float) -> Event:
        try:
            with map_errors(self.name):
                async with asyncio.timeout_at(limit):
                    return await anext(events)
        except TimeoutError as exc:
            raise NodeTimeout(self.name, "no content before the time limit") from exc
        except StopAsyncIteration as exc:
            raise NodeProtocolError(self.name, "stream ended without [DONE]") from exc

    async def _read_to_end(self, events: AsyncIterator[Event]) -> None:
        """Read past ``[DONE]`` to the end of the body, so the connection is kept for reuse.

        A node ends its body right after ``[DONE]``; a response closed before that would close
        its connection too, and every request would pay for a new one. One that does not end
        within a moment is left to ``response.aclose()``.
        """
        with contextlib.suppress(NodeError, TimeoutError):
            async with asyncio.timeout(_READ_TO_END):
                with map_errors(self.name):
                    async for _ in events:
                        pass

    async def probe(self, timeout: float) -> Probe:
        """Check readiness without generating tokens or taking llama_cpp.server's lock."""
        try:
            with map_errors(self.name):
                response = await self._client.get(f"{self._base}/health", timeout=timeout)
        except NodeError as exc:
            return Probe("down", error=exc.message)
        if response.status_code == 503:
            return Probe("loading", kind="llama_server", error="model loading")
        if response.status_code == 404:
            return Probe("ready", kind="llama_cpp_server", slots=1)
        if response.status_code == 200:
            return Probe("ready", kind="llama_server", slots=await self._slots(timeout))
        if response.status_code >= 500:
            return Probe("down", error=f"health check answered {response.status_code}")
        return Probe("ready", kind=self.spec.kind)

    async def _slots(self, timeout: float) -> int | None:
        try:
            with map_errors(self.name):
                response = await self._client.get(
                    f"{self._base}/props", headers=self._headers, timeout=timeout
                )
            slots = response.json().get("total_slots")
        except (NodeError, ValueError, AttributeError):
            return None
        return slots if isinstance(slots, int) and slots > 0 else None

    async def aclose(self) -> None:
        """The shared httpx client belongs to the pool; nothing of our own to close."""
