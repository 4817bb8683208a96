"""Admission control for one node: never more requests in flight than it has slots.

Requests beyond the capacity wait in line: by priority first (a user's own turn, priority 0,
before background chores, priority 1, such as the titles and tags chat front ends ask for),
then across clients in turn (one waiter of each client that waits, round and round, so one
client's burst cannot starve the others), then in arrival order. A waiter that is not
admitted within its timeout gets :class:`backends.errors.QueueTimeout`. The capacity may
change at run time (it is learned from the node), and waiters are admitted as soon as it
grows.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from backends.errors import QueueTimeout

Line = dict[str, deque[asyncio.Future[None]]]
"""One priority's waiters, by client; the client first in the dict is served next."""


class Admission:
    """A resizable semaphore that admits waiters fairly, with queue accounting."""

    def __init__(self, capacity: int) -> None:
        self._capacity = max(1, capacity)
        self.in_flight = 0
        self._lines: tuple[Line, ...] = ({}, {})

    @property
    def capacity(self) -> int:
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = max(1, value)
        self._wake()

    @property
    def queued(self) -> int:
        return sum(len(waiters) for line in self._lines for waiters in line.values())

    @property
    def free(self) -> int:
        return max(0, self._capacity - self.in_flight)

    @property
    def load(self) -> float:
        """Outstanding work per slot: what selection minimises."""
        return (self.in_flight + self.queued) / self._capacity

    @asynccontextmanager
    async def slot(
        self, timeout: float, priority: int = 0, client: str = ""
    ) -> AsyncIterator[None]:
        """Hold one slot for the duration of the block."""
        await self.acquire(timeout, priority, client)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, timeout: float, priority: int = 0, client: str = "") -> None:
        """Take a slot, waiting behind every waiter of a higher priority (0 is the highest;
        ``priority`` is 0 or 1) and taking turns with the other clients of the same one."""
        rank = min(max(priority, 0), len(self._lines) - 1)
        if self.free and not any(self._lines[: rank + 1]):
            self.in_flight += 1
            return
        line = self._lines[rank]
        waiter = asyncio.get_running_loop().create_future()
        line.setdefault(client, deque()).append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            self._abandon(line, client, waiter)
            if isinstance(exc, TimeoutError):
                raise QueueTimeout(
                    f"no free slot within {timeout:g} s", retry_after=max(1.0, timeout / 10)
                ) from exc
            raise

    def _abandon(self, line: Line, client: str, waiter: asyncio.Future[None]) -> None:
        """A waiter gave up; if it was admitted meanwhile, hand its slot back."""
        waiters = line.get(client)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            if not waiters:
                del line[client]
        elif waiter.done() and not waiter.cancelled():
            self.release()

    def release(self) -> None:
        self.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        for line in self._lines:
            while line and self.free:
                self._admit_next(line)

    def _admit_next(self, line: Line) -> None:
        """Admit the first waiter of the client whose turn it is; that client goes to the
        back of the line."""
        client = next(iter(line))
        waiters = line.pop(client)
        waiter = waiters.popleft()
        if waiters:
            line[client] = waiters
        if not waiter.done():
            self.in_flight += 1
            waiter.set_result(None)
