"""`POST /v1/chat/completions`: from a validated body to a streamed or whole answer.

The strategy returns a *committed* stream: by the time it does, a node has produced its first
content token, so every failure before that point was retried elsewhere (or is an HTTP error
status here). After it, a node failure ends the SSE stream with an ``error`` frame and no
``[DONE]``, so a cut answer never looks complete. One log line is written per request, after
the answer is sent where there is one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Coroutine, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

from backends.base import ChatRequest, Chunk, Served
from backends.collect import Accumulator, estimate_prompt_tokens
from backends.errors import BooagentError
from backends.sse import DONE, encode_comment, encode_data
from ensemble.base import NO_OPTIONS, Options, Strategy
from gateway.errors import error_body
from gateway.schema import ParsedChat
from gateway.wire import Identity, client_chunk, usage_chunk

_log = structlog.get_logger("booagent.request")
CLIENT_CLOSED = 499
DONE_FRAME = encode_data(DONE)


@dataclass(slots=True)
class ChatLog:
    """The one log line of a chat request, filled in as the request goes."""

    model: str
    strategy: str
    stream: bool
    started: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    ttft: float | None = None

    def elapsed(self) -> float:
        return asyncio.get_running_loop().time() - self.started

    def mark_first_token(self) -> None:
        if self.ttft is None:
            self.ttft = self.elapsed()

    def emit(
        self, status: int, served: Served, usage: Mapping[str, int] | None, **extra: Any
    ) -> None:
        _log.info(
            "chat_completion",
            status=status,
            model=self.model,
            strategy=served.strategy or self.strategy,
            kind=served.kind,
            stream=self.stream,
            node=served.node or None,
            attempts=len(served.attempts) or len(served.calls),
            failures=served.failures,
            queue_wait_s=round(served.queue_wait, 4),
            ttft_s=None if self.ttft is None else round(self.ttft, 4),
            total_s=round(self.elapsed(), 4),
            tokens_in=usage["prompt_tokens"] if usage else None,
            tokens_out=usage["completion_tokens"] if usage else None,
            **extra,
        )


def _json(data: Any) -> bytes:
    return msgspec.json.encode(data)


@dataclass(slots=True)
class Turn:
    """One request being answered: identity on the wire, what was said, who said it."""

    identity: Identity
    acc: Accumulator
    log: ChatLog
    served: Served
    stack: AsyncExitStack
    include_usage: bool
    options: Options = NO_OPTIONS
    outcome: tuple[int, str | None] | None = None
    logged: bool = False

    def usage(self) -> dict[str, int]:
        """Tokens of every member call the request caused, not only the answer's."""
        usage = self.acc.usage()
        return {k: v + self.served.extra_usage.get(k, 0) for k, v in usage.items()}

    def booagent(self) -> dict[str, Any]:
        """The answer's ``booagent`` object: strategy, members asked, who won and why."""
        served = self.served
        calls = served.calls or [
            {
                "member": served.member,
                "node": served.node,
                "latency_s": round(self.log.elapsed(), 3),
                "tokens": self.acc.usage()["completion_tokens"],
                "outcome": "answered",
            }
        ]
        return {
            "strategy": served.strategy or self.log.strategy,
            "requested": self.log.strategy,
            "kind": served.kind,
            "node": served.node,
            "attempts": len(served.attempts),
            "failures": served.failures,
            **served.decision,
            "calls": calls,
        }

    def end(self, status: int, error: str | None) -> None:
        """Record how the request ended (whichever path gets here first)."""
        if self.outcome is None:
            self.outcome = (status, error)

    def write_log(self) -> None:
        """Write the request's log line, once (a request that never ended is a client gone)."""
        if not self.logged:
            self.logged = True
            status, error = self.outcome or (CLIENT_CLOSED, "client disconnected")
            self.log.emit(status, self.served, self.usage(), error=error)

    def finish(self, status: int, error: str | None) -> None:
        """Record how the request ended and write its log line now."""
        self.end(status, error)
        self.write_log()


class Answer(ASGIResponse):
    """A response that writes the request's log line once it is sent (or sending failed), so
    the client is not kept waiting for it."""

    __slots__ = ("turn",)

    def __init__(self, turn: Turn, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.turn = turn

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.turn.write_log()


async def answer(
    parsed: ParsedChat, strategy: Strategy, receive: Receive, request_id: str
) -> ASGIResponse:
    """Run the strategy and answer in the form the client asked for."""
    checked = parsed.checked
    turn = Turn(
        Identity(checked.model),
        Accumulator(prompt_estimate=estimate_prompt_tokens(parsed.forward.get("messages"))),
        ChatLog(model=checked.model, strategy=strategy.name, stream=checked.stream),
        Served(),
        AsyncExitStack(),
        parsed.include_usage,
        parsed.options,
    )
    request = ChatRequest(parsed.forward, request_id=request_id, buffered=not checked.stream)
    if checked.stream:
        return await _streamed(turn, strategy, request)
    return await _whole(turn, strategy, request, receive)


async def _open(turn: Turn, strategy: Strategy, request: ChatRequest) -> AsyncIterator[Chunk]:
    """Enter the strategy's committed stream; failures before the commit are logged here."""
    try:
        return await turn.stack.enter_async_context(strategy(request, turn.served, turn.options))
    except BooagentError as exc:
        await turn.stack.aclose()
        turn.finish(exc.status_code, exc.message)
        raise


async def _streamed(turn: Turn, strategy: Strategy, request: ChatRequest) -> ASGIResponse:
    chunks = await _open(turn, strategy, request)
    headers = {
        **_served_headers(turn.served, strategy),
        "cache-control": "no-cache",
        "x-accel-buffering": "no",
    }
    return EventStream(turn, _sse(turn, chunks), headers)


class EventStream(Answer):
    """The SSE body, sent frame by frame until it ends or the client goes away.

    Litestar's ``Stream`` does this with an anyio task group per response; this is the same
    disconnect handling as a whole answer's (:func:`_unless_disconnected`) at a fraction of the
    cost (docs/performance.md). The ``[DONE]`` frame, always the last, ends the body with it,
    so the client has the whole answer before the node's stream is closed behind it. The frames
    are closed however the stream ends.
    """

    __slots__ = ("frames",)
    _should_set_content_length = False

    def __init__(
        self, turn: Turn, frames: AsyncGenerator[bytes, None], headers: dict[str, str]
    ) -> None:
        super().__init__(turn, headers=headers, media_type="text/event-stream", status_code=200)
        self.frames = frames

    async def send_body(self, send: Send, receive: Receive) -> None:
        try:
            await _unless_disconnected(self._relay(send), receive)
        finally:
            await self.frames.aclose()  # once the body has ended: no disconnect to watch for

    async def _relay(self, send: Send) -> None:
        async for frame in self.frames:
            last = frame is DONE_FRAME
            await send({"type": "http.response.body", "body": frame, "more_body": not last})
            if last:
                return
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _served_headers(served: Served, strategy: Strategy) -> dict[str, str]:
    """What is known when the headers go out (a stream of a multi-member strategy names its
    node only in the final chunk's ``booagent`` object)."""
    headers = {"x-booagent-strategy": served.strategy or strategy.name}
    if served.node:
        headers["x-booagent-node"] = served.node
        headers["x-booagent-attempts"] = str(len(served.attempts))
    return headers


async def _whole(
    turn: Turn, strategy: Strategy, request: ChatRequest, receive: Receive
) -> ASGIResponse:
    """Collect the whole answer, giving up (and freeing the node) if the client goes away."""
    try:
        answered = await _unless_disconnected(_collect(turn, strategy, request), receive)
    except BaseException:
        turn.write_log()
        raise
    if not answered:
        turn.end(CLIENT_CLOSED, "client disconnected")
        return Answer(turn, body=b"", status_code=CLIENT_CLOSED)
    completion = turn.acc.completion(turn.identity)
    completion.update(usage=turn.usage(), booagent=turn.booagent())
    headers = _served_headers(turn.served, strategy)
    return Answer(turn, body=_json(completion), media_type="application/json", headers=headers)


async def _unless_disconnected(work: Coroutine[Any, Any, None], receive: Receive) -> bool:
    """Run ``work`` to its end, or cancel it when the client goes away (then return False).

    ``work`` runs in this task; only the disconnect watch gets one, and when it sees the client
    go it cancels this task, as ``asyncio.timeout`` does when its time is up. The cancellation
    lands inside ``work`` (this task is waiting there whenever the watch's callback runs) and is
    taken back here; one from anyone else goes on up.
    """
    task = asyncio.current_task()
    assert task is not None
    watch = asyncio.ensure_future(_disconnect(receive))
    gone = False

    def client_gone(_: object) -> None:
        nonlocal gone
        if not watch.cancelled():
            watch.exception()  # a receive that failed counts as the client gone
            gone = True
            task.cancel()

    watch.add_done_callback(client_gone)
    try:
        await work
    except asyncio.CancelledError:
        if not gone or task.uncancel() > 0:
            raise
        return False
    finally:
        watch.remove_done_callback(client_gone)
        watch.cancel()
    if gone:  # ``work`` swallowed the cancellation
        task.uncancel()
        return False
    return True


async def _collect(turn: Turn, strategy: Strategy, request: ChatRequest) -> None:
    chunks = await _open(turn, strategy, request)
    async with turn.stack:
        status, error = CLIENT_CLOSED, None
        try:
            await _drain(turn, chunks)
            status = 200
        except BooagentError as exc:
            status, error = exc.status_code, exc.message
            raise
        finally:
            turn.end(status, error)


async def _drain(turn: Turn, chunks: AsyncIterator[Chunk]) -> None:
    async for chunk in chunks:
        if not chunk.keepalive:
            turn.log.mark_first_token()
            turn.acc.add(chunk)


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _data(payload: Any) -> bytes:
    """One ``data:`` frame of JSON (which never holds a raw newline, so one line always)."""
    return b"data: " + _json(payload) + b"\n\n"


async def _sse(turn: Turn, chunks: AsyncIterator[Chunk]) -> AsyncGenerator[bytes, None]:
    """The SSE body, ``[DONE]`` last (the response ends with it, then closes this generator).
    Always closes the upstream stream, however it ends."""
    status, error = CLIENT_CLOSED, None
    try:
        async for frame in _frames(turn, chunks):
            yield frame
        status = 200
        yield DONE_FRAME
    except BooagentError as exc:
        status, error = exc.status_code, exc.message
        yield _data(error_body(exc))
    finally:
        await turn.stack.aclose()
        turn.end(status, error)


async def _frames(turn: Turn, chunks: AsyncIterator[Chunk]) -> AsyncIterator[bytes]:
    """Client frames, those of chunks that arrived together (``Chunk.more``) as one write."""
    framer = _Framer(turn)
    try:
        async for chunk in chunks:
            framer.add(chunk)
            if framer.out and not chunk.more:
                yield framer.take()
    except BooagentError:
        if framer.out:
            yield framer.take()
        raise
    yield framer.end()


@dataclass(slots=True)
class _Framer:
    """Turns an answer's chunks into client frames, gathered in ``out`` until taken; holds the
    finishing chunk back to carry the ``booagent`` object."""

    turn: Turn
    out: list[bytes] = field(default_factory=list)
    first: bool = True
    held: dict[str, Any] | None = None

    def add(self, chunk: Chunk) -> None:
        if chunk.keepalive:
            self.out.append(_KEEPALIVE)
            return
        self.turn.acc.add(chunk)
        frame = self._client(chunk)
        if frame is None:
            return
        self.turn.log.mark_first_token()
        self.first = False
        if self.held is not None:
            self.out.append(_data(self.held))
        self.held = frame if chunk.finish_reason else None
        if self.held is None:
            self.out.append(_data(frame))

    def _client(self, chunk: Chunk) -> dict[str, Any] | None:
        turn = self.turn
        return client_chunk(
            turn.identity, chunk, first=self.first, include_usage=turn.include_usage
        )

    def take(self) -> bytes:
        taken = b"".join(self.out)
        self.out.clear()
        return taken

    def end(self) -> bytes:
        """What is left, then the finishing frame with the ``booagent`` object (and usage)."""
        turn = self.turn
        final = self.held or self._client(Chunk(_EMPTY_FINISH))
        booagent = turn.booagent()
        self.out.append(_data({**(final or {}), "booagent": booagent}))
        if turn.include_usage:
            self.out.append(
                _data({**usage_chunk(turn.identity, turn.usage()), "booagent": booagent})
            )
        return self.take()


_KEEPALIVE = encode_comment("keep-alive")
_EMPTY_FINISH = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
