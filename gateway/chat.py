"""`POST /v1/chat/completions`: from a classified request to a streamed or whole answer.

:class:`ChatResponse` owns one request from end to end: it opens the strategy's answer, sends
it, closes it, and writes the request's one log line after the answer is sent.

The commit contract, the same for every strategy (route, a named member, cascade, ensemble,
program): nothing is sent until the answer is *committed*.

- A whole answer commits when it is complete: any failure before is an HTTP error status
  (502/503/504 when the nodes failed, the node's 4xx when the request was refused, 429 for a
  queue timeout), with the OpenAI error body.
- A stream commits when its first content token is ready: a node's first token (route, a
  named member), the winner's (cascade, ensemble, program). Strategies that consult members
  before they answer commit earlier if that takes longer than ``strategies.keepalive_seconds``:
  with an SSE keep-alive comment, then one every ``keepalive_seconds``, so that clients never
  time out while members work (the answer's node is then named only in its last chunk). A
  failure before the commit is the same HTTP error status as a whole answer's. After it, a
  node that fails mid-answer is replaced by another node of its member that goes on with the
  answer, when it is plain text (:mod:`backends.continuation`: the chunks keep coming);
  otherwise the stream ends with a ``data: {"error": ...}`` frame and no ``[DONE]``, so a cut
  answer never looks complete.
- When the client goes away, the work is cancelled at once, which closes every node request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import msgspec
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

from backends.base import Chunk
from backends.collect import Accumulator, estimate_prompt_tokens
from backends.errors import BooagentError
from backends.sse import DONE, encode_comment, encode_data
from ensemble.base import Answer, Call, Context, Strategy
from gateway.errors import error_body, send_error
from gateway.limits import NOBODY, Client
from gateway.record import (
    CLIENT_CLOSED,
    Ended,
    Outcome,
    booagent,
    calls_of,
    fitted,
    log_request,
    usage_of,
)
from gateway.wire import Identity, client_chunk, completion, usage_chunk

DONE_FRAME = encode_data(DONE)
_KEEPALIVE = encode_comment("keep-alive")
_EMPTY_FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
_GONE = Outcome(CLIENT_CLOSED, "client disconnected")


@dataclass(frozen=True, slots=True)
class Exchange:
    """One chat request as the gateway answers it."""

    ctx: Context
    strategy: Strategy
    identity: Identity
    stream: bool
    include_usage: bool = False
    keepalive: float = 2.0
    client: Client = NOBODY
    report: Callable[[Ended], None] = log_request
    """Told how the request ended, once, after its last byte (log line, metrics, limits)."""

    def accumulator(self, answer: Answer) -> Accumulator:
        """Gathers the answer; a node that reports no usage gets the prompt tokens the pool
        counted (or estimated, tools included)."""
        counted = answer.live.prompt_tokens if answer.live is not None else 0
        if counted:
            return Accumulator(prompt_estimate=counted)
        body = self.ctx.body
        return Accumulator(
            prompt_estimate=estimate_prompt_tokens(body.get("messages"), body.get("tools"))
        )

    def record(self, answer: Answer, calls: tuple[Call, ...]) -> dict[str, Any]:
        record = booagent(answer, calls, kind=self.ctx.kind.value, requested=self.strategy.name)
        if self.ctx.selected is not None:
            record["tools"] = self.ctx.selected.record()
        return record

    def calls(self, answer: Answer, acc: Accumulator, started: float) -> tuple[Call, ...]:
        """The answer's calls; a streamed node call's latency counts from its first attempt
        (from ``started``, the request's start, when it has none)."""
        live = answer.live
        now = asyncio.get_running_loop().time()
        return calls_of(answer, acc, now - (live.started if live else started))


class ChatResponse:
    """The answer to one chat request, as an ASGI app (see the module's commit contract)."""

    __slots__ = ("exchange",)

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = self.exchange
        loop = asyncio.get_running_loop()
        started = loop.time()
        outcome = _GONE
        try:
            if exchange.stream:
                outcome = await _Streamed(exchange, send, started).run(receive)
            else:
                outcome = await _Whole(exchange, send, started).run(receive)
        finally:
            exchange.report(
                Ended(
                    outcome,
                    model=exchange.identity.model,
                    requested=exchange.strategy.name,
                    kind=exchange.ctx.kind.value,
                    stream=exchange.stream,
                    total=loop.time() - started,
                    client=exchange.client,
                    at=time.time(),
                )
            )


@dataclass(slots=True)
class _Whole:
    """A whole answer: collected to its end (freeing the node if the client leaves), then
    sent as one ``chat.completion``."""

    exchange: Exchange
    send: Send
    started: float

    async def run(self, receive: Receive) -> Outcome:
        try:
            async with Watch(receive) as watch:
                return await self._answer(watch)
        except BooagentError as exc:
            await send_error(self.send, exc)
            return Outcome.failed(exc)
        return _GONE

    async def _answer(self, watch: Watch) -> Outcome:
        exchange = self.exchange
        loop = asyncio.get_running_loop()
        first: float | None = None
        async with exchange.strategy(exchange.ctx) as answer:
            acc = exchange.accumulator(answer)
            async for chunk in answer.chunks:
                acc.add(chunk)
                if first is None and chunk.is_content:
                    first = loop.time() - self.started
            calls = exchange.calls(answer, acc, self.started)
        usage = usage_of(answer, acc)
        body = completion(exchange.identity, acc, usage)
        body["booagent"] = exchange.record(answer, calls)
        watch.disarm()
        encoded = msgspec.json.encode(body)
        length = (b"content-length", str(len(encoded)).encode())
        await self.send(_start(200, [*_answer_headers(answer), length], b"application/json"))
        await self.send(_body(encoded))
        return Outcome(200, None, answer, calls, usage, first)


@dataclass(slots=True)
class _Streamed:
    """A streamed answer: keep-alives while the strategy works, then its frames."""

    exchange: Exchange
    send: Send
    started: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, receive: Receive) -> Outcome:
        keeper: asyncio.Future[bool]
        if self.exchange.strategy.deliberates(self.exchange.ctx):
            keeper = asyncio.ensure_future(self._keep_alive())
        else:
            keeper = asyncio.get_running_loop().create_future()
            keeper.set_result(False)
        try:
            async with Watch(receive) as watch:
                return await self._answer(keeper, watch)
        finally:
            self.stop.set()
            if not keeper.done():
                keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        return _GONE

    async def _keep_alive(self) -> bool:
        """Until ``stop`` is set: once ``keepalive`` seconds pass without it, commit (send the
        headers), then send a keep-alive comment every ``keepalive`` seconds. Returns whether
        it committed."""
        committed = False
        interval = self.exchange.keepalive
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self.stop.wait()
                return committed
            except TimeoutError:
                pass
            if not committed:
                committed = True
                await self.send(_start(200, self._headers(None), _EVENT_STREAM))
            await self.send(_body(_KEEPALIVE, more=True))

    async def _answer(self, keeper: asyncio.Future[bool], watch: Watch) -> Outcome:
        exchange = self.exchange
        try:
            async with exchange.strategy(exchange.ctx) as answer:
                self.stop.set()
                if not await keeper:
                    await self.send(_start(200, self._headers(answer), _EVENT_STREAM))
                return await self._relay(answer, watch)
        except BooagentError as exc:
            self.stop.set()
            if await keeper:
                await self._end(_frame(error_body(exc)), watch)
            else:
                watch.disarm()
                await send_error(self.send, exc)
            return Outcome.failed(exc)

    async def _relay(self, answer: Answer, watch: Watch) -> Outcome:
        """Relay the answer's chunks as client frames; those of chunks that arrived together
        (``Chunk.more``) in one write. Ends with the finishing frame (``booagent`` object,
        usage) and ``[DONE]``, or with an error frame if the answer fails on the way."""
        exchange, loop = self.exchange, asyncio.get_running_loop()
        framer = _Framer(exchange.identity, exchange.include_usage, exchange.accumulator(answer))
        try:
            async for chunk in answer.chunks:
                framer.add(chunk, loop.time() - self.started)
                if framer.out and not chunk.more:
                    await self._send(framer.take())
        except BooagentError as exc:
            framer.out.append(_frame(error_body(exc)))
            await self._end(framer.take(), watch)
            calls = exchange.calls(answer, framer.acc, self.started)
            usage = usage_of(answer, framer.acc)
            return Outcome(exc.status_code, exc.message, answer, calls, usage, framer.first_token)
        calls = exchange.calls(answer, framer.acc, self.started)
        usage = usage_of(answer, framer.acc)
        await self._end(framer.end(exchange.record(answer, calls), usage), watch)
        return Outcome(200, None, answer, calls, usage, framer.first_token)

    def _headers(self, answer: Answer | None) -> list[tuple[bytes, bytes]]:
        headers = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        if answer is None:
            return [(b"x-booagent-strategy", self.exchange.strategy.name.encode()), *headers]
        return [*_answer_headers(answer), *headers]

    async def _send(self, body: bytes) -> None:
        await self.send(_body(body, more=True))

    async def _end(self, body: bytes, watch: Watch) -> None:
        """The last body message; the client has the whole answer before the node's stream is
        closed behind it, which is no longer cancelled if the client leaves meanwhile."""
        watch.disarm()
        await self.send(_body(body))


@dataclass(slots=True)
class _Framer:
    """Turns an answer's chunks into client frames, gathered in ``out`` until taken; holds the
    finishing chunk back to carry the ``booagent`` object."""

    identity: Identity
    include_usage: bool
    acc: Accumulator
    out: list[bytes] = field(default_factory=list)
    first_token: float | None = None
    held: dict[str, Any] | None = None
    first: bool = True

    def add(self, chunk: Chunk, elapsed: float) -> None:
        self.acc.add(chunk)
        frame = self._client(chunk)
        if frame is None:
            return
        self.first = False
        if self.first_token is None and chunk.is_content:
            self.first_token = elapsed
        if self.held is not None:
            self.out.append(_frame(self.held))
        self.held = frame if chunk.finish_reason else None
        if self.held is None:
            self.out.append(_frame(frame))

    def _client(self, chunk: Chunk) -> dict[str, Any] | None:
        return client_chunk(
            self.identity, chunk, first=self.first, include_usage=self.include_usage
        )

    def take(self) -> bytes:
        taken = b"".join(self.out)
        self.out.clear()
        return taken

    def end(self, record: dict[str, Any], usage: dict[str, int]) -> bytes:
        """What is left, the finishing frame with the ``booagent`` object, then ``[DONE]``.

        Usage goes out once: as OpenAI sends it (a last chunk with no choices) when the client
        asked with ``stream_options.include_usage``, else in the finishing chunk, where Open
        WebUI reads it without being asked (it adds up every ``usage`` it sees, so never two)
        and the OpenAI SDK accepts it."""
        final = self.held or self._client(Chunk(_EMPTY_FINISH)) or {}
        if self.include_usage:
            self.out.append(_frame({**final, "booagent": record}))
            self.out.append(_frame({**usage_chunk(self.identity, usage), "booagent": record}))
        else:
            self.out.append(_frame({**final, "usage": usage, "booagent": record}))
        self.out.append(DONE_FRAME)
        return self.take()


class Watch:
    """Cancels the task that runs the block when the client goes away (the block's exception
    is then swallowed and :attr:`gone` is True).

    The watch is a task of its own, reading ``receive`` until ``http.disconnect``; when it sees
    the client go, it cancels the block's task, as ``asyncio.timeout`` does when its time is
    up. :meth:`disarm` ends the watch early (once the last byte is sent, what is left to do is
    cleaning up, which must not be cut short).
    """

    __slots__ = ("_receive", "_task", "_watch", "gone")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task: asyncio.Task[Any] | None = None
        self._watch: asyncio.Future[None] | None = None
        self.gone = False

    async def __aenter__(self) -> Watch:
        self._task = asyncio.current_task()
        self._watch = asyncio.ensure_future(_disconnect(self._receive))
        self._watch.add_done_callback(self._client_gone)
        return self

    def _client_gone(self, watch: asyncio.Future[None]) -> None:
        if not watch.cancelled() and self._task is not None:
            watch.exception()  # a receive that failed counts as the client gone
            self.gone = True
            self._task.cancel()

    def disarm(self) -> None:
        if self._watch is not None:
            self._watch.remove_done_callback(self._client_gone)
            self._watch.cancel()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.disarm()
        if not self.gone or self._task is None:
            return False
        # the cancellation was ours: take it back (one from anyone else goes on up)
        return self._task.uncancel() == 0 and (
            exc is None or isinstance(exc, asyncio.CancelledError)
        )


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


_EVENT_STREAM = b"text/event-stream"


def _start(
    status: int, headers: list[tuple[bytes, bytes]], media_type: bytes
) -> HTTPResponseStartEvent:
    return {
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", media_type), *headers],
    }


def _body(body: bytes, *, more: bool = False) -> HTTPResponseBodyEvent:
    return {"type": "http.response.body", "body": body, "more_body": more}


def _answer_headers(answer: Answer) -> list[tuple[bytes, bytes]]:
    """Which strategy answered, the node whose answer it is, and how many node attempts were
    made to get it (for a decided answer, by every call before it)."""
    headers = [(b"x-booagent-strategy", answer.strategy.encode())]
    context = fitted(answer.every_call())
    if context:
        headers.append((b"x-booagent-context", "; ".join(context).encode("latin-1", "replace")))
    if answer.node:
        live = answer.live
        attempts = len(live.attempts) if live else sum(len(c.attempts) for c in answer.calls)
        headers += [(b"x-booagent-node", answer.node.encode()),
                    (b"x-booagent-attempts", str(attempts).encode())]  # fmt: skip
    return headers


def _frame(payload: Any) -> bytes:
    """One ``data:`` frame of JSON (which never holds a raw newline, so one line always)."""
    return b"data: " + msgspec.json.encode(payload) + b"\n\n"
