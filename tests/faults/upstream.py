"""A fake llama.cpp node on loopback TCP that injects one fault per scenario.

It speaks just enough HTTP/1.1 (request line, headers, ``Content-Length`` bodies, keep-alive of
sequential requests) on raw ``asyncio`` streams, so it can do what a framework cannot: reset the
TCP connection, accept and never answer, stall after the headers, cut a chunked stream, send
malformed SSE. Routes: ``POST /v1/chat/completions`` (streaming or not), ``POST
/v1/completions`` (streamed, as ``llama_cpp.server`` answers a raw prompt), ``GET /health``,
``GET /v1/models``. Faults apply to chat and completion requests only; ``health_status`` drives
``/health``. A request that continues an answer (a final ``assistant`` message, or a prompt
that ends with ``ANSWER_MARK`` and the answer so far) gets the rest of ``text`` after that
answer; a prefilled answer is sent back first, merged with the first new word, as the native
``llama-server`` tested here does.

Inside a test's event loop (asyncio only)::

    async with FaultServer("a", Scenario.CUT, fault_after=2) as node:
        ...  # node.url, node.base_url

From synchronous code, e.g. a gateway run by uvicorn in another thread::

    with FaultServer("a").in_thread() as node:
        node.scenario = Scenario.RATE_LIMITED_ONCE
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Literal, Self

from tests.harness import close_server

from ._wire import (
    ClientGone,
    Connection,
    Request,
    SseWriter,
    completion,
    context_length_error,
    error_body,
)

HealthStatus = int | Literal["reset", "hang"]


class Scenario(enum.Enum):
    """The fault a node injects into chat requests (``HEALTHY``: none)."""

    HEALTHY = "healthy"
    RATE_LIMITED_ONCE = "rate_limited_once"  # first request 429 + Retry-After, then healthy
    RATE_LIMITED = "rate_limited"  # always 429 + Retry-After
    SERVER_ERROR_ONCE = "server_error_once"  # first request 500, then healthy
    UNAVAILABLE = "unavailable"  # always 503 (llama-server's "Loading model")
    RESET = "reset"  # TCP RST once the request is read
    NO_RESPONSE = "no_response"  # read the request, never answer
    SLOW_FIRST_TOKEN = "slow_first_token"  # role chunk, `delay` s, then the rest
    CUT = "cut"  # `fault_after` content chunks, then close (no terminating 0-chunk)
    STALL = "stall"  # `fault_after` content chunks, then only `: ping` comments
    MALFORMED = "malformed"  # `fault_after` content chunks, `data: {not json`, then the rest
    NO_DONE = "no_done"  # complete stream that ends cleanly without `data: [DONE]`
    CONTEXT_LENGTH = "context_length"  # 400 context_length_exceeded
    ERROR_FRAME = "error_frame"  # `fault_after` content chunks, a `data: {"error": ...}` frame
    FLAPPING = "flapping"  # cycles: `flap[0]` requests reset, then `flap[1]` healthy


ANSWER_MARK = "<|im_start|>assistant\n"
"""Where a ChatML prompt's answer begins (SmolLM2 and Qwen templates)."""
_GENERATION_FAILED = error_body("generation failed", "server_error", 500)
_LOADING = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
_ONCE = {Scenario.RATE_LIMITED_ONCE, Scenario.SERVER_ERROR_ONCE}


@dataclass
class ChatRecord:
    """One chat request as the node saw it.

    ``fault`` is the scenario actually applied (``HEALTHY`` once a ``*_ONCE`` fault has fired,
    ``RESET`` for a :meth:`FaultServer.fail_next` reset). ``disconnected`` is true when the
    client went away before the response was complete.
    """

    body: dict[str, Any] | None
    stream: bool
    fault: Scenario
    disconnected: bool = False
    path: str = "/v1/chat/completions"


class FaultServer:
    """A fake llama.cpp node on ``127.0.0.1`` that injects ``scenario`` into chat requests.

    Tunables are plain attributes, safe to change while serving: ``scenario`` (setting it
    re-arms the ``*_ONCE`` faults and restarts the ``FLAPPING`` cycle), ``delay`` (first-token
    wait of ``SLOW_FIRST_TOKEN``), ``ping_interval`` (``STALL`` keep-alives), ``token_interval``
    (pause between content chunks), ``fault_after`` (content chunks sent before a mid-stream
    fault), ``retry_after`` (seconds, the 429 ``Retry-After``), ``flap`` (``(failures,
    successes)`` per ``FLAPPING`` cycle), ``text`` (the answer) and ``health_status`` (an HTTP
    status for ``/health``, or ``"reset"`` / ``"hang"`` to make it unreachable) and ``slots``
    (when set, ``GET /props`` reports that many ``total_slots``, like llama-server).

    Observations: ``records`` (one :class:`ChatRecord` per chat request), ``requests``,
    ``last_body``, ``cancelled`` (chat requests whose client left early), ``connections``
    (TCP connections accepted), ``active`` and ``max_active`` (chat requests being answered
    now, and the most at once).
    """

    def __init__(
        self,
        name: str,
        scenario: Scenario = Scenario.HEALTHY,
        *,
        delay: float = 20.0,
        ping_interval: float = 0.5,
        token_interval: float = 0.0,
        fault_after: int = 2,
    ) -> None:
        self.name = name
        self.delay, self.ping_interval, self.token_interval = delay, ping_interval, token_interval
        self.fault_after = fault_after
        self.retry_after = 1
        self.flap = (2, 2)
        self.text = f"hello from {name}"
        self.health_status: HealthStatus = 200
        self.slots: int | None = None
        self.active = 0
        self.max_active = 0
        self.records: list[ChatRecord] = []
        self.connections = 0
        self._scenario = scenario
        self._seq = 0
        self._resets = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []
        self._closing = False
        self._port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    @property
    def scenario(self) -> Scenario:
        """The fault injected into chat requests; setting it re-arms the per-scenario counters."""
        return self._scenario

    @scenario.setter
    def scenario(self, value: Scenario) -> None:
        self._scenario, self._seq = value, 0

    def fail_next(self, n: int) -> None:
        """Reset the connection of the next ``n`` chat requests, whatever the scenario."""
        self._resets = n

    @property
    def port(self) -> int:
        """The TCP port the node listens on (0 before :meth:`start`)."""
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the node's root (``/health`` lives here)."""
        return f"http://127.0.0.1:{self._port}"

    @property
    def base_url(self) -> str:
        """``url + "/v1"``, what an OpenAI client takes as ``base_url``."""
        return f"{self.url}/v1"

    @property
    def requests(self) -> int:
        """How many chat requests arrived."""
        return len(self.records)

    @property
    def last_body(self) -> dict[str, Any] | None:
        """The JSON body of the latest chat request (``None`` before any, or if not JSON)."""
        return self.records[-1].body if self.records else None

    @property
    def cancelled(self) -> int:
        """How many chat requests were abandoned by their client before the response ended."""
        return sum(record.disconnected for record in self.records)

    async def start(self) -> None:
        """Listen on 127.0.0.1, on a free port."""
        self._closing = False
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self._port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening, close every connection and end every handler task."""
        self._closing = True
        if self._server is not None:
            await close_server(self._server)
        while self._tasks:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.transport.abort()
        await asyncio.gather(*(w.wait_closed() for w in self._writers), return_exceptions=True)
        self._writers.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[Self]:
        """Serve from a background thread with its own event loop, for synchronous callers."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve_until_stopped(ready))
            except BaseException as exc:  # surfaced in the caller's thread
                failure.append(exc)
                ready.set()

        thread = threading.Thread(target=run, name=f"fault-{self.name}", daemon=True)
        thread.start()
        started = ready.wait(10)
        try:
            if failure:
                raise failure[0]
            if not started:
                raise RuntimeError(f"fault server {self.name!r} did not start")
            yield self
        finally:
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(10)

    async def _serve_until_stopped(self, ready: threading.Event) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with self:
            ready.set()
            await self._stop.wait()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Register a connection the moment it is accepted, so :meth:`stop` closes it even when
        its handler task is cancelled before it ever ran (a health probe arriving as the server
        stops); a handler that never ran would never close its socket."""
        self._writers.append(writer)
        self._tasks.add(asyncio.get_running_loop().create_task(self._handle(reader, writer)))

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections += 1
        conn = Connection(reader, writer)
        try:
            while not self._closing and (request := await conn.read_request()):
                if not await self._dispatch(conn, request):
                    break
        except (ClientGone, ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass  # the client left, or sent something that is not HTTP/1.1
        except asyncio.CancelledError:
            pass  # only stop() cancels; ending normally keeps 3.11's StreamReaderProtocol quiet
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _dispatch(self, conn: Connection, req: Request) -> bool:
        route = (req.method, req.path)
        if route in (("POST", "/v1/chat/completions"), ("POST", "/v1/completions")):
            return await self._chat(conn, req)
        if route == ("GET", "/health"):
            return await self._health(conn, req)
        if route == ("GET", "/props") and self.slots is not None:
            return await conn.respond(200, {"total_slots": self.slots}, req.keep_alive)
        if route == ("GET", "/v1/models"):
            model = {"id": self.name, "object": "model", "created": 0, "owned_by": "llamacpp"}
            return await conn.respond(200, {"object": "list", "data": [model]}, req.keep_alive)
        body = error_body(f"File Not Found: {req.path}", "not_found_error", 404)
        return await conn.respond(404, body, req.keep_alive)

    async def _health(self, conn: Connection, req: Request) -> bool:
        status = self.health_status
        if status == "reset":
            conn.reset()
            return False
        if status == "hang":
            await conn.pause(math.inf)
            return False
        if status == 200:
            return await conn.respond(200, {"status": "ok"}, req.keep_alive)
        message = "Loading model" if status == 503 else HTTPStatus(status).phrase
        body = {"error": {"code": status, "message": message, "type": "unavailable_error"}}
        return await conn.respond(status, body, req.keep_alive)

    def _next_fault(self) -> Scenario:
        seq, self._seq = self._seq, self._seq + 1
        if self._resets > 0:
            self._resets -= 1
            return Scenario.RESET
        scenario = self._scenario
        if scenario in _ONCE:
            return scenario if seq == 0 else Scenario.HEALTHY
        if scenario is Scenario.FLAPPING:
            failures, successes = self.flap
            return scenario if seq % (failures + successes) < failures else Scenario.HEALTHY
        return scenario

    async def _chat(self, conn: Connection, req: Request) -> bool:
        try:
            body = json.loads(req.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self.records.append(ChatRecord(None, False, Scenario.HEALTHY))
            error = error_body("invalid JSON body", "invalid_request_error", None)
            return await conn.respond(400, error, req.keep_alive)
        record = ChatRecord(body, bool(body.get("stream")), self._next_fault(), path=req.path)
        self.records.append(record)
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            return await self._answer(conn, req, record)
        except ClientGone:
            record.disconnected = True
            return False
        finally:
            self.active -= 1

    async def _answer(self, conn: Connection, req: Request, record: ChatRecord) -> bool:
        fault, keep = record.fault, req.keep_alive
        if fault in (Scenario.RESET, Scenario.FLAPPING):
            conn.reset()
            return False
        if fault is Scenario.NO_RESPONSE:
            await conn.pause(math.inf)
            return False
        if fault in (Scenario.RATE_LIMITED, Scenario.RATE_LIMITED_ONCE):
            body = error_body("rate limited", "rate_limit_error", "rate_limit_exceeded")
            return await conn.respond(429, body, keep, {"Retry-After": str(self.retry_after)})
        if fault is Scenario.SERVER_ERROR_ONCE:
            body = error_body("internal server error", "server_error", None)
            return await conn.respond(500, body, keep)
        if fault is Scenario.UNAVAILABLE:
            return await conn.respond(503, _LOADING, keep)
        if fault is Scenario.CONTEXT_LENGTH:
            return await conn.respond(400, context_length_error(self._prompt_tokens(record)), keep)
        if record.stream:
            return await self._stream(conn, req, record)
        return await self._complete(conn, req, record)

    def _words(self, record: ChatRecord | None = None) -> list[str]:
        """The answer's words, or, for a request that continues it, those after the answer so
        far (the first merged with the prefill, which llama-server sends back)."""
        words = self.text.split(" ")
        pieces = [words[0], *(f" {word}" for word in words[1:])]
        done, prefilled = _continued(record.body if record else None)
        if done is None:
            return pieces
        rest = pieces[len(done.split(" ")) :]
        return [done + rest[0], *rest[1:]] if prefilled and rest else rest

    def _prompt_tokens(self, record: ChatRecord) -> int:
        messages = (record.body or {}).get("messages") or []
        return sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))

    def _usage(self, record: ChatRecord) -> dict[str, int]:
        prompt, completion = self._prompt_tokens(record), len(self._words(record))
        total = prompt + completion
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}

    def _model(self, record: ChatRecord) -> str:
        return str((record.body or {}).get("model") or self.name)

    async def _stream(self, conn: Connection, req: Request, record: ChatRecord) -> bool:
        body, fault = record.body or {}, record.fault
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        text = record.path == "/v1/completions"
        sse = SseWriter(conn, self._model(record), include_usage and not text, text=text)
        await sse.start(req.keep_alive)
        if not text:
            await sse.chunk({"role": "assistant", "content": ""})
        words = self._words(record)
        fault_at = min(self.fault_after, len(words))
        for i in range(len(words) + 1):
            if fault is Scenario.SLOW_FIRST_TOKEN and i == 0:
                await conn.pause(self.delay)
            if i == fault_at and not await self._mid_stream_fault(conn, sse, fault):
                return False
            if i < len(words):
                await sse.chunk({"content": words[i]})
                await conn.pause(self.token_interval)
        await sse.chunk({}, finish="stop")
        if include_usage:
            await sse.chunk({}, usage=self._usage(record))
        if fault is not Scenario.NO_DONE:
            await sse.frame("[DONE]")
        await sse.end()
        return req.keep_alive

    async def _mid_stream_fault(self, conn: Connection, sse: SseWriter, fault: Scenario) -> bool:
        """Inject ``fault`` into a running stream; False when the stream must end here."""
        if fault is Scenario.CUT:
            conn.writer.close()
            return False
        if fault is Scenario.STALL:
            while True:
                await conn.pause(self.ping_interval)
                await sse.raw(": ping\n\n")
        if fault is Scenario.MALFORMED:
            await sse.frame("{not json")
        if fault is Scenario.ERROR_FRAME:
            await sse.frame(json.dumps(_GENERATION_FAILED))
            await sse.end()
            return False
        return True

    async def _complete(self, conn: Connection, req: Request, record: ChatRecord) -> bool:
        fault, keep = record.fault, req.keep_alive
        if fault is Scenario.SLOW_FIRST_TOKEN:
            await conn.pause(self.delay)
        if fault is Scenario.MALFORMED:
            return await conn.respond(200, b"{not json", keep)
        if fault is Scenario.ERROR_FRAME:
            return await conn.respond(500, _GENERATION_FAILED, keep)
        data = json.dumps(completion(self._model(record), self.text, self._usage(record))).encode()
        if fault not in (Scenario.CUT, Scenario.STALL):
            return await conn.respond(200, data, keep)
        headers = {"Content-Type": "application/json", "Content-Length": str(len(data))}
        await conn.head(200, headers, keep)
        await conn.send(data[: len(data) // 2])
        if fault is Scenario.STALL:
            await conn.pause(math.inf)
        conn.writer.close()
        return False


def _continued(body: dict[str, Any] | None) -> tuple[str | None, bool]:
    """The answer a request asks to continue (None: a new one) and whether it was prefilled."""
    prompt = (body or {}).get("prompt")
    if isinstance(prompt, str):
        return (prompt.rpartition(ANSWER_MARK)[2] if ANSWER_MARK in prompt else None), False
    messages = (body or {}).get("messages") or []
    last = messages[-1] if messages and isinstance(messages[-1], dict) else {}
    return (str(last.get("content")), True) if last.get("role") == "assistant" else (None, False)
