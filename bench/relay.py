"""The cheapest relay Python can be, as a ceiling for the gateway: ``python -m bench.relay``.

Every client connection gets its own connection to the upstream, and bytes are copied both
ways as they arrive: no HTTP parsing, no JSON, no routing, no admission, no logs. Any gateway
does at least this much work per request (it reads the client's bytes and writes the
upstream's), so what this relay serves through the same two cores bounds what a gateway
written in Python could serve. ``booagent bench overhead`` measures it next to the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast

from bench.upstream import serve_until_signalled
from gateway.loop import run


class _Pipe(asyncio.Protocol):
    """One side of a relayed connection: what arrives is written to the peer's transport."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Pipe | None = None
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a stream socket's transport (uvloop's is no subclass of asyncio.Transport)
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer.transport if self.peer is not None else None
        if peer is None:
            self._pending.append(data)
        else:
            peer.write(data)

    def attach(self, peer: _Pipe) -> None:
        """Join ``peer``; bytes that arrived before it was connected go to it now."""
        self.peer, peer.peer = peer, self
        assert peer.transport is not None
        for data in self._pending:
            peer.transport.write(data)
        self._pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Pipe):
    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__()
        self._upstream = upstream
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connecting = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(_Pipe, *self._upstream)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        self.attach(upstream)


async def serve(host: str, port: int, upstream: tuple[str, int]) -> None:
    """Relay until SIGINT or SIGTERM."""
    await serve_until_signalled(lambda: _Client(upstream), host, port)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, (args.host, args.upstream_port)))


if __name__ == "__main__":
    main()
