"""One llama.cpp node over HTTP, with aiohttp (its errors are translated by
:mod:`backends.http_errors`, the one module that handles HTTP client errors).

The node is always asked for a stream, even when the client wants a single JSON answer: a
stream can be cut off the moment the client goes away (freeing the node's slot), and the
first-token and stall limits apply to every request alike. Every limit is an
``asyncio.timeout_at`` around one wait, except the connect limit, which aiohttp applies.

aiohttp rather than httpx because httpcore's pool is the bottleneck under concurrency (it
walks every idle connection on each request and release; encode/httpx#3215): see
docs/performance.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections import deque
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, aclosing, asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import aiohttp
import msgspec

from backends.base import ChatRequest, Chunk, Reply
from backends.config import Node, Timeouts
from backends.continuation import chat_chunk
from backends.errors import (
    NodeError,
    NodeProtocolError,
    NodeTimeout,
)
from backends.http_errors import event_error, map_errors, retry_after_of, status_error
from backends.mtls import TlsFiles
from backends.sse import DONE, ByteDecoder, Event
from backends.toolcalls_plan import NodeKind as DialectKind
from backends.toolcalls_plan import TemplateStyle, template_style
from backends.tooling import Dialect, involves_tools, relay

_READ_TO_END = 0.5


@dataclass(frozen=True, slots=True)
class Probe:
    """What a health probe saw. ``state`` is ``ready``, ``loading`` or ``down``."""

    state: str
    kind: str = "unknown"
    slots: int | None = None
    error: str = ""


class _Events:
    """The events of one response body; reads the network only when none is waiting.

    One read often brings several events (a fast node writes a whole answer at once), so the
    time limit and the await are paid per read, not per event.
    """

    def __init__(self, node: str, body: aiohttp.StreamReader) -> None:
        self._node = node
        self._body = body
        self._decoder = ByteDecoder()
        self._ready: deque[Event] = deque()
        self._ended = False

    async def next(self, limit: float) -> Event | None:
        """The next event, or None at the end of the body; :class:`NodeTimeout` if none
        arrives by ``limit`` (loop time)."""
        while not self._ready:
            if self._ended:
                return None
            await self._read(limit)
        return self._ready.popleft()

    @property
    def waiting(self) -> bool:
        """True when the next event has already arrived."""
        return bool(self._ready)

    async def drain(self, limit: float) -> None:
        """Read (and drop) the rest of the body, until it ends or ``limit`` passes."""
        while not self._ended:
            self._ready.clear()
            await self._read(limit)

    async def _read(self, limit: float) -> None:
        try:
            with map_errors(self._node):
                async with asyncio.timeout_at(limit):
                    data = await self._body.readany()
        except TimeoutError as exc:
            raise NodeTimeout(self._node, "no content before the time limit") from exc
        if data:
            self._ready.extend(self._decoder.feed(data))
        else:
            self._ended = True
            self._ready.extend(self._decoder.close())


def _decode(text: str) -> Any:
    """JSON by msgspec (several times quicker); what it refuses but Python's ``json`` reads
    (NaN, a lone surrogate escape) goes to ``json``, which raises ``ValueError`` if malformed."""
    try:
        return msgspec.json.decode(text)
    except msgspec.DecodeError:
        return json.loads(text)


def _parse_chunk(node: str, event: Event, *, more: bool, first: bool = False) -> Chunk:
    try:
        data = _decode(event.data)
    except ValueError as exc:
        raise NodeProtocolError(node, f"malformed chunk: {event.data[:80]!r}") from exc
    if not isinstance(data, dict):
        raise NodeProtocolError(node, f"chunk is not an object: {event.data[:80]!r}")
    if "error" in data:
        raise event_error(node, event, first=first)
    if data.get("object") == "text_completion":
        data = chat_chunk(data)
    return Chunk(data, more=more)


@asynccontextmanager
async def _within(node: str, limit: float, what: str) -> AsyncIterator[None]:
    """Foreign exceptions translated, and :class:`NodeTimeout` once ``limit`` (loop time) passes."""
    try:
        with map_errors(node):
            async with asyncio.timeout_at(limit):
                yield
    except TimeoutError as exc:
        raise NodeTimeout(node, f"{what} before the time limit") from exc


class HttpNode:
    """A :class:`backends.base.Backend` for one llama.cpp server (either kind).

    ``style`` says how the member's chat template treats tools (``none``: the gateway describes
    them in the system message); the node's kind and, on native ``llama-server``, its template
    are learned by :meth:`probe`, and decide how requests with tools are asked
    (:mod:`backends.tooling`).
    """

    def __init__(
        self,
        spec: Node,
        session: aiohttp.ClientSession,
        timeouts: Timeouts,
        *,
        style: TemplateStyle = "hermes",
        tls: TlsFiles | None = None,
    ) -> None:
        self.name = spec.name
        self.spec = spec
        self._session = session
        self._tls = tls if spec.url.startswith("https:") else None
        self._timeouts = timeouts
        self._base = spec.url.rstrip("/")
        self._auth = {"Authorization": f"Bearer {spec.api_key}"} if spec.api_key else {}
        self._post_headers = {**self._auth, "Content-Type": "application/json"}
        # ceil_threshold: aiohttp would round the deadline of a limit over 5 s up to a whole second.
        self._connect = aiohttp.ClientTimeout(connect=timeouts.connect, ceil_threshold=math.inf)
        kind = spec.kind if spec.kind != "auto" else "llama_cpp_server"
        self.dialect = Dialect(kind, style)

    def _secure(self) -> dict[str, Any]:
        """For a node behind a node agent (``https://``): the cluster's mutual-TLS context
        as it is now (certificates are re-read when they change), and the name the node's
        certificate must carry."""
        if self._tls is None:
            return {}
        return {"ssl": self._tls.context, "server_hostname": self.spec.tls_name}

    def _payload(self, body: Mapping[str, Any]) -> bytes:
        sent = {
            **body,
            "model": self.spec.member,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        return json.dumps(sent, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()

    @asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[Reply]:
        loop = asyncio.get_running_loop()
        begun = loop.time()
        deadline = begun + self._timeouts.total
        body, dialect = request.body, self.dialect
        reading = request.prompt_tokens / self._timeouts.prompt_rate
        if not involves_tools(body):
            async with self._open(dialect.formatted(body), begun + reading, deadline) as chunks:
                yield Reply(chunks, self.name, self.spec.member, attempts=(self.name,),
                            started=begun)  # fmt: skip
            return
        plan = dialect.plan(body)

        def reask(again: Mapping[str, Any]) -> AbstractAsyncContextManager[AsyncIterator[Chunk]]:
            return self._open(dialect.formatted(again), loop.time(), deadline)

        async with (
            self._open(dialect.formatted(plan.body), begun + reading, deadline) as chunks,
            aclosing(relay(body, plan, chunks, reask, dialect)) as relayed,
        ):
            yield Reply(relayed, self.name, self.spec.member, attempts=(self.name,), started=begun)

    @asynccontextmanager
    async def complete(self, request: ChatRequest) -> AsyncIterator[Reply]:
        """``request.body`` (a raw ``prompt``) on ``/v1/completions``, its text as chat chunks:
        how ``llama_cpp.server``, which cannot prefill, continues an answer cut off elsewhere
        (:mod:`backends.continuation`)."""
        begun = asyncio.get_running_loop().time()
        reading = request.prompt_tokens / self._timeouts.prompt_rate
        deadline = begun + self._timeouts.total
        async with self._open(request.body, begun + reading, deadline, "completions") as chunks:
            yield Reply(chunks, self.name, self.spec.member, attempts=(self.name,), started=begun)

    @asynccontextmanager
    async def _open(
        self, body: Mapping[str, Any], begun: float, deadline: float, path: str = "chat/completions"
    ) -> AsyncIterator[AsyncIterator[Chunk]]:
        """POST ``body`` to ``/v1/<path>``; the answer's chunks (the response is closed when the
        block ends). The first-token limit runs from ``begun`` (moved on by the time the prompt
        takes)."""
        first = min(begun + self._timeouts.first_token, deadline)
        async with _within(self.name, first, "no response"):
            response = await self._session.post(
                f"{self._base}/v1/{path}",
                data=self._payload(body),
                headers=self._post_headers,
                timeout=self._connect,
                allow_redirects=False,
                **self._secure(),
            )
        try:
            await self._raise_for_status(response, deadline)
            yield self._chunks(response, first, deadline)
        finally:
            response.close()  # a response read to its end has already gone back to the pool

    async def _raise_for_status(self, response: aiohttp.ClientResponse, deadline: float) -> None:
        if response.status == 200:
            return
        async with _within(self.name, deadline, "no error body"):
            body = await response.read()
        raise status_error(self.name, response.status, body, retry_after_of(response))

    async def _chunks(
        self, response: aiohttp.ClientResponse, first: float, deadline: float
    ) -> AsyncIterator[Chunk]:
        """Chunks until ``[DONE]``; the clock is reset by content chunks only.

        A body that ends without ``[DONE]`` after a chunk that gave the answer's
        ``finish_reason`` is a complete answer (some servers close without it); one that ends
        before is cut off."""
        loop = asyncio.get_running_loop()
        events = _Events(self.name, response.content)
        limit, finished, output = first, False, False
        while True:
            event = await events.next(limit)
            if event is None:
                if finished:
                    return
                what = "stream ended without [DONE]" if output else "stream ended empty"
                raise NodeProtocolError(self.name, what, inside_answer=not output)
            if event.kind == "error":
                raise event_error(self.name, event, first=not output)
            if event.data.strip() == DONE:
                await self._read_to_end(events)
                return
            chunk = _parse_chunk(self.name, event, more=events.waiting, first=not output)
            output = output or chunk.is_content
            if chunk.is_content:
                limit = min(loop.time() + self._timeouts.stall, deadline)
            finished = finished or chunk.finish_reason is not None
            yield chunk

    @staticmethod
    async def _read_to_end(events: _Events) -> None:
        """Read past ``[DONE]`` to the end of the body, so the connection is kept for reuse.

        A node ends its body right after ``[DONE]``; a response closed before that would close
        its connection too, and every request would pay for a new one. One that does not end
        within a moment is left to ``response.close()``, which closes its connection.
        """
        with contextlib.suppress(NodeError):
            await events.drain(asyncio.get_running_loop().time() + _READ_TO_END)

    async def probe(self, timeout: float) -> Probe:
        """Check readiness without generating tokens or taking llama_cpp.server's lock; learn
        the node's kind (and, on native llama-server, its slots and chat template)."""
        try:
            status, body = await self._get("/health", timeout)
        except NodeError as exc:
            return Probe("down", error=exc.message)
        if status == 503:
            return Probe("loading", kind="llama_server", error="model loading")
        if status == 404:
            self.dialect = replace(self.dialect, kind="llama_cpp_server")
            return Probe("ready", kind="llama_cpp_server", slots=1)
        if status == 200:
            return await self._ready(body, timeout)
        if status >= 500:
            return Probe("down", error=f"health check answered {status}")
        return Probe("ready", kind=self.spec.kind)

    async def _ready(self, health: bytes, timeout: float) -> Probe:
        """A node that answered its health check: native ``llama-server`` (its slots and
        template from ``/props``), or a node agent saying what it runs (:mod:`backends.agent`)."""
        agent = _agent_record(health)
        kind: DialectKind = (
            "llama_cpp_server" if agent.get("kind") == "llama_cpp_server" else "llama_server"
        )
        slots, template = await self._props(timeout) if kind == "llama_server" else (None, "")
        slots = agent.get("slots") if isinstance(agent.get("slots"), int) else slots
        style = template_style(template) if template else self.dialect.style
        self.dialect = Dialect(kind, style)
        return Probe("ready", kind=kind, slots=slots)

    async def count_tokens(self, body: Mapping[str, Any]) -> int | None:
        """The prompt's tokens as this node renders and tokenizes it (native llama-server's
        ``/v1/chat/completions/input_tokens``: no slot taken); None when it cannot say."""
        if self.dialect.kind != "llama_server":
            return None
        sent = self.dialect.prepared(body)
        limit = asyncio.get_running_loop().time() + self._timeouts.connect + 2.0
        try:
            async with (
                _within(self.name, limit, "no token count"),
                self._session.post(
                    f"{self._base}/v1/chat/completions/input_tokens",
                    data=self._payload(sent),
                    headers=self._post_headers,
                    allow_redirects=False,
                    **self._secure(),
                ) as response,
            ):
                counted = json.loads(await response.read()) if response.status == 200 else {}
        except (NodeError, ValueError):
            return None
        tokens = counted.get("input_tokens") if isinstance(counted, dict) else None
        return tokens if isinstance(tokens, int) else None

    async def _props(self, timeout: float) -> tuple[int | None, str]:
        """Native llama-server's slot count and chat template (None and "" when unknown)."""
        try:
            _, body = await self._get("/props", timeout, self._auth)
            props = json.loads(body)
        except (NodeError, ValueError):
            return None, ""
        if not isinstance(props, dict):
            return None, ""
        slots, template = props.get("total_slots"), props.get("chat_template")
        slots = slots if isinstance(slots, int) and slots > 0 else None
        return slots, template if isinstance(template, str) else ""

    async def _get(
        self, path: str, timeout: float, headers: Mapping[str, str] | None = None
    ) -> tuple[int, bytes]:
        """``GET path``: the status and the whole body (read, so the connection is reused)."""
        limit = asyncio.get_running_loop().time() + timeout
        async with (
            _within(self.name, limit, f"no answer to GET {path}"),
            self._session.get(
                self._base + path, headers=headers, allow_redirects=False, **self._secure()
            ) as response,
        ):
            return response.status, await response.read()

    async def aclose(self) -> None:
        """The shared aiohttp session belongs to the pool; nothing of our own to close."""


def _agent_record(health: bytes) -> dict[str, Any]:
    """What a node agent's health answer says of the server behind it (empty for others)."""
    try:
        found = json.loads(health)
    except ValueError:
        return {}
    record = found.get("booagent_node") if isinstance(found, dict) else None
    return record if isinstance(record, dict) else {}
