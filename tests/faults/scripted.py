"""A node on loopback TCP that answers each path with a test's script, for client tests.

Where :class:`tests.faults.upstream.FaultServer` plays a llama.cpp node with named faults, a
:class:`ScriptedNode` sends exactly the bytes, pauses, resets and garbage a test lays out, so
an HTTP client's every edge can be driven over a real socket::

    async with ScriptedNode({"/v1/chat/completions": stream(b"data: [DONE]\\n\\n")}) as node:
        ...  # node.url; node.requests, node.connections, node.abandoned

A script is ``async (conn, request) -> keep_alive``; :func:`stream`, :func:`respond`,
:func:`garbage` and :func:`reset` build the common ones.
"""

from __future__ import annotations

import asyncio
import enum
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Self

from tests.harness import close_server

from ._wire import ClientGone, Connection, Request

Script = Callable[[Connection, Request], Awaitable[bool]]


class Cut(enum.Enum):
    """How a :func:`stream` ends early: ``RESET`` (TCP RST) or ``CLOSE`` (FIN, no last chunk)."""

    RESET = "reset"
    CLOSE = "close"


Part = bytes | float | Cut


def stream(*parts: Part, status: int = 200, headers: Mapping[str, str] | None = None) -> Script:
    """A chunked body: bytes are sent as one chunk each, a float is a pause in seconds."""

    async def script(conn: Connection, req: Request) -> bool:
        head = {"Content-Type": "text/event-stream", "Transfer-Encoding": "chunked"}
        await conn.head(status, {**head, **(headers or {})}, req.keep_alive)
        for part in parts:
            if part is Cut.RESET:
                conn.reset()
                return False
            if part is Cut.CLOSE:
                conn.writer.close()
                return False
            if isinstance(part, float):
                await conn.pause(part)
            else:
                await conn.send(b"%x\r\n%s\r\n" % (len(part), part))
        await conn.send(b"0\r\n\r\n")
        return req.keep_alive

    return script


def respond(status: int, body: object, pause: float = 0.0) -> Script:
    """A ``Content-Length`` answer (``body`` as bytes, or as JSON), after ``pause`` seconds."""

    async def script(conn: Connection, req: Request) -> bool:
        await conn.pause(pause)
        return await conn.respond(status, body, req.keep_alive)

    return script


def garbage(data: bytes) -> Script:
    """Bytes that are not HTTP, then the connection closed."""

    async def script(conn: Connection, req: Request) -> bool:
        await conn.send(data)
        return False

    return script


async def reset(conn: Connection, req: Request) -> bool:
    """A TCP RST instead of an answer."""
    conn.reset()
    return False


async def hang(conn: Connection, req: Request) -> bool:
    """Never answer (until the client leaves)."""
    await conn.pause(math.inf)
    return False


class ScriptedNode:
    """Serves ``routes`` (path -> script) on ``127.0.0.1``; other paths get a 404.

    Observations: ``requests`` (every request, in order), ``connections`` (TCP connections
    accepted) and ``abandoned`` (answers the client left before their end).
    """

    def __init__(self, routes: Mapping[str, Script]) -> None:
        self.routes = dict(routes)
        self.requests: list[Request] = []
        self.connections = 0
        self.abandoned = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (after :meth:`__aenter__`)."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        await close_server(self._server)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = Connection(reader, writer)
        try:
            while request := await conn.read_request():
                self.requests.append(request)
                if not await self._answer(conn, request):
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _answer(self, conn: Connection, request: Request) -> bool:
        script = self.routes.get(request.path)
        try:
            if script is None:
                return await conn.respond(404, b"not found", request.keep_alive)
            return await script(conn, request)
        except ClientGone:
            self.abandoned += 1
            return False
