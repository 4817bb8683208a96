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
        _stop_accepting(server)
        server.should_exit = True
        thread.join(15)


def _stop_accepting(server: uvicorn.Server, settle: float = 0.05) -> None:
    """Stop the listening sockets accepting before uvicorn closes them, and give connections
    already accepted a moment to attach: a connection accepted in the loop turn before
    ``Server.close()`` is left to the garbage collector (python/cpython#109564; see
    ``tests.faults._wire.close_server``)."""
    listeners = [sock for srv in server.servers for sock in srv.sockets]
    if not listeners:
        return
    loop = server.servers[0].get_loop()
    for sock in listeners:
        loop.call_soon_threadsafe(loop.remove_reader, sock.fileno())
    time.sleep(settle)


def _wait_until_up(base: str, server: uvicorn.Server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.started:
            httpx.get(f"{base}/health", timeout=2).raise_for_status()
            return
        time.sleep(0.02)
    raise TimeoutError(f"gateway at {base} did not start within {timeout} s")
