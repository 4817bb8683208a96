"""Serving TLS on a port, with a clear answer to plain HTTP sent to it.

A server that hands its listening socket to ``loop.create_server(ssl=...)`` drops a plain-HTTP
connection without a word (the client sees a reset, or an empty reply). So the server accepts
connections itself (:class:`HttpsListener`) and peeks at the first byte of each, without reading
it: a TLS connection starts with a handshake record (0x16) and is handed over, still unread, to
``loop.connect_accepted_socket(..., ssl=...)`` and the server's own HTTP protocol (uvicorn's for
the gateway, aiohttp's for a node agent); anything else is answered with the ``refusal`` the
server gives for the https:// URL it should have used, then closed (nginx does the same: "The
plain HTTP request was sent to HTTPS port"). Only loop methods that uvloop and asyncio's own
loop both have are used (``sock_accept``, ``add_reader``, ``sock_recv``, ``sock_sendall``,
``connect_accepted_socket``).

Every wait is bounded: a connection that sends nothing, or never finishes its handshake, is
closed after ``timeout`` seconds. A refused or failed connection is one ``tls_refused`` log line
with its ``reason`` (for a failed handshake, OpenSSL's words: an unknown CA, an expired
certificate, none given), never a traceback.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable
from typing import Protocol

import structlog

_log = structlog.get_logger("booagent.tls")

TLS_HANDSHAKE = b"\x16"
"""The first byte of every TLS connection: the record type of a handshake."""
_HEAD_LIMIT = 8192
_LINGER_SECONDS = 1.0
_TLS_SHUTDOWN_SECONDS = 1.0
"""How long a closing connection waits for the client's TLS close_notify. An idle pooled
client never sends one until it is used again; with the loops' default (30 s), a graceful
shutdown of a few seconds would give up on such a connection and leave it open."""
_HOST = re.compile(rb"^[A-Za-z0-9.\-\[\]:]{1,255}$")
_TARGET = re.compile(rb"^/[!-~]{0,200}$")

ProtocolFactory = Callable[[], asyncio.BaseProtocol]
Refusal = Callable[[str], bytes]
"""The whole HTTP response to a plain-HTTP request, given the https:// URL to use instead."""


class ContextSource(Protocol):
    """Holds the TLS context new connections use (it may be replaced while serving)."""

    @property
    def context(self) -> ssl.SSLContext: ...


def listening_sockets(host: str, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking sockets listening on every address ``host`` resolves to, as
    ``loop.create_server`` binds them (``SO_REUSEADDR``; IPv6 sockets IPv6 only)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class HttpsListener:
    """Accepts connections on ``sock``: TLS ones reach ``protocol``, plain HTTP ``refusal``.

    Has what uvicorn's shutdown uses of a server: :meth:`close` stops accepting (and drops
    connections not handed over yet), :meth:`wait_closed` returns once its tasks are done
    and the socket is closed."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: ProtocolFactory,
        tls: ContextSource,
        refusal: Refusal,
        timeout: float = 10.0,
    ) -> None:
        self.sockets = [sock]
        self._protocol, self._tls, self._timeout = protocol, tls, timeout
        self._refusal = refusal
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = asyncio.get_running_loop().create_task(self._accept(sock))
        self._accepting.add_done_callback(lambda _: sock.close())

    def close(self) -> None:
        self._accepting.cancel()
        for task in self._tasks:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._accepting, *self._tasks, return_exceptions=True)

    async def _accept(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                _log.warning("accept_failed", error=exc.strerror or str(exc))
                await asyncio.sleep(1.0)
                continue
            conn.setblocking(False)
            task = loop.create_task(self._sort(conn))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _sort(self, conn: socket.socket) -> None:
        """Hand a TLS connection over, refuse anything else; close it unless handed over."""
        handed_over = False
        try:
            async with asyncio.timeout(self._timeout):
                first = await _peek(conn)
                if first == TLS_HANDSHAKE:
                    handed_over = await self._hand_over(conn)
                elif first:
                    await _refuse_plain_http(conn, self._refusal)
        except TimeoutError:
            _log.info("tls_refused", reason="timeout", peer=_peer(conn))
        except OSError as exc:
            _log.info("tls_refused", reason="connection_lost", error=str(exc), peer=_peer(conn))
        finally:
            if not handed_over:
                conn.close()

    async def _hand_over(self, conn: socket.socket) -> bool:
        """The TLS handshake, then uvicorn's protocol; False (logged) if the handshake fails."""
        peer = _peer(conn)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(
                self._protocol,
                conn,
                ssl=self._tls.context,
                ssl_handshake_timeout=self._timeout,
                ssl_shutdown_timeout=_TLS_SHUTDOWN_SECONDS,
            )
        except (OSError, EOFError) as exc:
            _log.info("tls_refused", reason="handshake_failed", error=str(exc), peer=peer)
            return False
        return True


async def _peek(conn: socket.socket) -> bytes:
    """The connection's first byte, left unread (b"" if the client closed without a word)."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(conn.fileno(), _settle, readable)
    try:
        await readable
    finally:
        loop.remove_reader(conn.fileno())
    try:
        return conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return b""


async def _refuse_plain_http(conn: socket.socket, refusal: Refusal) -> None:
    """Read the request head, answer 400 naming the https:// URL, then close gracefully: stop
    sending and read what is left for a moment, so the client reads the answer instead of a
    reset (a socket closed with unread data resets the connection)."""
    loop = asyncio.get_running_loop()
    peer = _peer(conn)
    head = await _request_head(loop, conn)
    _log.info("tls_refused", reason="plain_http", peer=peer)  # before the client can read it
    await loop.sock_sendall(conn, refusal(https_url(head, conn.getsockname())))
    conn.shutdown(socket.SHUT_WR)
    try:
        async with asyncio.timeout(_LINGER_SECONDS):
            while await loop.sock_recv(conn, 65536):
                pass
    except (TimeoutError, OSError):
        pass


async def _request_head(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The bytes up to the end of the request head (at most 8 KiB)."""
    head = b""
    while b"\r\n\r\n" not in head and len(head) < _HEAD_LIMIT:
        chunk = await loop.sock_recv(conn, _HEAD_LIMIT - len(head))
        if not chunk:
            break
        head += chunk
    return head


def bad_request(body: bytes) -> bytes:
    """A whole ``400 Bad Request`` response with a JSON ``body``, closing the connection: the
    answer to plain HTTP sent to a TLS port, written on the raw socket."""
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def https_url(head: bytes, local: tuple[str, int] | tuple[str, int, int, int]) -> str:
    """Where the plain-HTTP request should have gone: its own ``Host`` and target with
    https://, or this socket's address if the request does not say (or says oddly)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    target = parts[1] if len(parts) == 3 and _TARGET.match(parts[1]) else b"/"
    hosts = [line[5:].strip() for line in lines[1:] if line[:5].lower() == b"host:"]
    if hosts and _HOST.match(hosts[0]):
        host = hosts[0].decode()
    else:
        address, port = local[0], local[1]
        host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return f"https://{host}{target.decode()}"


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
