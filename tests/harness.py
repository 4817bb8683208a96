"""Running real servers from synchronous tests: the gateway under uvicorn in a thread.

The gateway is served exactly as `booagent serve` serves it (uvicorn, the Litestar app from
``create_app``) on a free loopback port, so tests drive it over real HTTP with the `openai` SDK.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import httpx
import msgspec
import uvicorn

from gateway.app import PoolFactory, create_app
from gateway.settings import Settings

T = TypeVar("T")


def eventually(check: Callable[[], object], timeout: float = 10.0) -> bool:
    """Poll ``check`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_settings(**raw: Any) -> Settings:
    """Settings from plain values, validated like a config file."""
    return msgspec.convert(raw, Settings)


class LoopThread:
    """An asyncio loop in a daemon thread, for async resources that outlive one test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, factory: Callable[[], Awaitable[T]], timeout: float | None = None) -> T:
        async def call() -> T:
            return await factory()

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextmanager
def running_gateway(
    settings: Settings, *, pool_factory: PoolFactory | None = None
) -> Iterator[str]:
    """Serve the gateway in a thread; yields its base URL (``http://127.0.0.1:PORT``)."""
    port = free_port()
    app = create_app(settings, pool_factory=pool_factory)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base, server)
        yield base
    finally:
        _close_servers(server)
        server.should_exit = True
        thread.join(15)


async def close_server(server: asyncio.Server) -> None:
    """Close ``server`` without losing a socket to CPython's close race (python/cpython#109564,
    open): a connection accepted in the loop iteration before ``close()`` finishes attaching
    only afterwards, fails an assertion that is swallowed, and leaves its socket to the garbage
    collector ("unclosed transport"). So stop accepting first, let every accepted connection
    attach and reach its handler, and only then close."""
    loop = asyncio.get_running_loop()
    for sock in server.sockets:
        loop.remove_reader(sock.fileno())
    for _ in range(3):
        await asyncio.sleep(0)
    server.close()
    await server.wait_closed()


def _close_servers(server: uvicorn.Server) -> None:
    """Close uvicorn's listening servers with :func:`close_server` on its own loop, before it
    closes them itself (it then finds them closed)."""
    for srv in server.servers:
        if srv.get_loop().is_running():
            asyncio.run_coroutine_threadsafe(close_server(srv), srv.get_loop()).result(5)


def _wait_until_up(base: str, server: uvicorn.Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.started:
            httpx.get(f"{base}/health", timeout=2).raise_for_status()
            return
        time.sleep(0.02)
    raise TimeoutError(f"gateway at {base} did not start within {timeout} s")
