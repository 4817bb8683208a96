"""Admission control for one node: never more requests in flight than it has slots.

Requests beyond the capacity wait in line: by priority first (a user's own turn, priority 0,
before background chores, priority 1, such as the titles and tags chat front ends ask for),
then in arrival order. A waiter that is not admitted within its timeout gets
:class:`backends.errors.QueueTimeout`. The capacity may change at run time (it is learned
from the node), and waiters are admitted as soon as it grows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from backends.errors import QueueTimeout


class Admission:
    """A resizable FIFO semaphore with queue accounting."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self.in_flight = 0
        self._lines: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = max(1, value)
        self._wake()

    @property
    def queued(self) -> int:
        return sum(len(line) for line in self._lines)

    @property
    def free(self) -> int:
        return max(0, self._capacity - self.in_flight)

    @property
    def load(self) -> float:
        """Outstanding work per slot: what selection minimises."""
        return (self.in_flight + self.queued) / self._capacity

    @asynccontextmanager
    async def slot(self, timeout: float, priority: int = 0) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        await self.acquire(timeout, priority)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, timeout: float, priority: int = 0) -> None:
        """Take a slot, waiting behind every waiter of the same or a higher priority (0 is
        the highest); ``priority`` is 0 or 1."""
        rank = min(max(priority, 0), len(self._lines) - 1)
        line = self._lines[rank]
        if self.free and not any(self._lines[: rank + 1]):
            self.in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        line.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            self._abandon(line, waiter)
            if isinstance(exc, TimeoutError):
                raise QueueTimeout(
                    f"no free slot within {timeout:g} s", retry_after=max(1.0, timeout / 10)
                ) from exc
            raise

    def _abandon(self, line: deque[asyncio.Future[None]], waiter: asyncio.Future[None]) -> None:
        """A waiter gave up; if it was admitted meanwhile, hand its slot back."""
        if waiter in line:
            line.remove(waiter)
        elif waiter.done() and not waiter.cancelled():
            self.release()

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        for line in self._lines:
            while line and self.free:
                waiter = line.popleft()
                if not waiter.done():
                    self.in_flight += 1
                    waiter.set_result(None)
