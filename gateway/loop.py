"""The event loop the gateway runs on: uvloop where it is installed, else asyncio's own.

uvloop (libuv) runs the gateway's callbacks, timers and sockets in C; measured with callgrind,
it and httptools (which uvicorn picks up by itself) cut the gateway's instructions per request
by a fifth (docs/performance.md). uvloop has no Windows build, so there the stock loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory, or None (asyncio's default loop) where uvloop is missing."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the fastest loop at hand."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def loop_name() -> str:
    """What :func:`run` runs on, for reports."""
    return "asyncio" if loop_factory() is None else "uvloop"
