"""The least a gateway on the agreed stack can do per request: ``python -m bench.floor``.

uvicorn serves it exactly as it serves the gateway (same event loop, same HTTP parser), and its
one route, ``POST /v1/chat/completions``, reads the request, decodes its JSON and answers with
:mod:`bench.upstream`'s own bytes, whole or as SSE events, without asking any upstream: no node
client, no routing, no rewriting, no logs. Two variants:

- ``--app litestar``: a Litestar app (the framework the gateway is built on), one handler;
- ``--app asgi``: a bare ASGI callable, no framework at all.

A gateway on Litestar does all the floor does and more, so the share of direct throughput the
floor reaches bounds the gateway's; ``booagent bench overhead`` measures both beside the bare
TCP relay (:mod:`bench.relay`).
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import uvicorn
from litestar import Litestar, Request, get, post
from litestar.response.base import ASGIResponse
from litestar.types import ASGIApp, Receive, Send

from bench.upstream import read_ask, stream_frames, whole_body
from gateway.loop import run

_JSON = "application/json"
_HEALTH = b'{"status":"ok"}'
_BAD = b'{"error":{"message":"bad request","type":"invalid_request_error"}}'
_SSE_HEADERS = [(b"content-type", b"text/event-stream")]
_JSON_HEADERS = [(b"content-type", _JSON.encode())]

Answer = tuple[int, bool, Sequence[bytes]]
_HEALTH_ANSWER: Answer = (200, False, (_HEALTH,))


def answer_of(body: bytes) -> Answer:
    """Status, whether it streams, and the body's parts for one chat request."""
    ask = read_ask(body)
    if ask is None:
        return 400, False, (_BAD,)
    if not ask.stream:
        return 200, False, (whole_body(ask.tokens),)
    return 200, True, stream_frames(ask.tokens, ask.include_usage)


class _Events(ASGIResponse):
    """SSE events sent one ``send`` each, as the gateway sends a stream."""

    __slots__ = ("events",)
    _should_set_content_length = False

    def __init__(self, events: Sequence[bytes]) -> None:
        super().__init__(media_type="text/event-stream", status_code=200)
        self.events = events

    async def send_body(self, send: Send, receive: Receive) -> None:
        await _send_body(send, self.events)


@post("/v1/chat/completions", status_code=200)
async def _chat(request: Request[Any, Any, Any]) -> ASGIApp:
    status, stream, parts = answer_of(await request.body())
    if stream:
        return _Events(parts)
    return ASGIResponse(body=parts[0], status_code=status, media_type=_JSON)


@get("/health")
async def _health() -> ASGIApp:
    return ASGIResponse(body=_HEALTH, media_type=_JSON)


def litestar_app() -> Litestar:
    return Litestar(
        route_handlers=[_chat, _health], openapi_config=None, logging_config=None, debug=False
    )


RawReceive = Callable[[], Awaitable[dict[str, Any]]]
RawSend = Callable[[dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: dict[str, Any], receive: RawReceive, send: RawSend) -> None:
    """The same two routes with no framework: the least any ASGI app does."""
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"] == "/health":
        status, stream, parts = _HEALTH_ANSWER
    else:
        status, stream, parts = answer_of(body)
    if stream:
        await _send_events(send, parts)
        return
    headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(parts[0]))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": parts[0]})


async def _send_events(send: RawSend, events: Sequence[bytes]) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
    await _send_body(send, events)


async def _send_body(send: Callable[[Any], Awaitable[None]], events: Sequence[bytes]) -> None:
    """One ``send`` per event, as the gateway sends a stream, then the end of the body."""
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", choices=("litestar", "asgi"), default="litestar")
    args = parser.parse_args(argv)
    litestar = args.app == "litestar"
    config = uvicorn.Config(
        litestar_app() if litestar else asgi_app,
        host=args.host,
        port=args.port,
        log_level="warning",
        lifespan="on" if litestar else "off",
    )
    run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
