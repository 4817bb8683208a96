"""Tests for backends.admission: a resizable FIFO semaphore that times waiters out."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.admission import Admission
from backends.errors import QueueTimeout

pytestmark = pytest.mark.anyio
LONG = 60.0


async def settle() -> None:
    """Let every ready callback and woken task run."""
    for _ in range(5):
        await asyncio.sleep(0)


def waiting(admission: Admission) -> asyncio.Task[None]:
    return asyncio.create_task(admission.acquire(LONG))


class TestAdmission:
    async def test_admits_up_to_capacity_at_once(self) -> None:
        """Requests within the capacity never wait."""
        admission = Admission(2)
        await admission.acquire(0)
        await admission.acquire(0)
        assert (admission.in_flight, admission.queued, admission.free) == (2, 0, 0)

    async def test_waiters_are_admitted_in_arrival_order(self) -> None:
        """Each released slot goes to the longest waiting request."""
        admission = Admission(1)
        await admission.acquire(0)
        order: list[int] = []

        async def visit(i: int) -> None:
            await admission.acquire(LONG)
            order.append(i)

        tasks = [asyncio.create_task(visit(i)) for i in range(3)]
        await settle()
        assert admission.queued == 3
        for _ in range(3):
            admission.release()
            await settle()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]
        assert admission.in_flight == 1

    async def test_a_users_turn_goes_ahead_of_waiting_chores(self) -> None:
        """A priority-0 request waits only behind other priority-0 requests: a freed slot goes
        to it before chores that were waiting longer."""
        admission = Admission(1)
        await admission.acquire(0)
        order: list[str] = []

        async def visit(name: str, priority: int) -> None:
            await admission.acquire(LONG, priority)
            order.append(name)
            admission.release()

        chores = [asyncio.create_task(visit(f"chore{i}", 1)) for i in range(2)]
        await settle()
        user = asyncio.create_task(visit("user", 0))
        await settle()
        assert admission.queued == 3
        admission.release()
        await asyncio.gather(user, *chores)
        assert order == ["user", "chore0", "chore1"]

    async def test_a_chore_never_overtakes_a_waiting_user_turn(self) -> None:
        """A chore arriving while a slot is free but a user turn waits for it still queues."""
        admission = Admission(1)
        await admission.acquire(0)
        user = asyncio.create_task(admission.acquire(LONG, 0))
        await settle()
        admission.release()
        with pytest.raises(QueueTimeout):
            await admission.acquire(0.05, 1)
        await user
        assert admission.in_flight == 1

    async def test_new_arrival_does_not_overtake_the_queue(self) -> None:
        """A slot freed for a waiter is not taken by a request that arrives meanwhile."""
        admission = Admission(1)
        await admission.acquire(0)
        first = waiting(admission)
        await settle()
        admission.release()
        late = waiting(admission)
        await settle()
        assert first.done()
        assert not late.done()
        late.cancel()
        await asyncio.gather(late, return_exceptions=True)

    async def test_timeout_raises_queue_timeout_without_leaking(self) -> None:
        """A waiter not admitted in time gets QueueTimeout and leaves no trace."""
        admission = Admission(1)
        await admission.acquire(0)
        with pytest.raises(QueueTimeout) as caught:
            await admission.acquire(0.01)
        assert caught.value.status_code == 429
        assert caught.value.retry_after == 1.0
        assert (admission.in_flight, admission.queued) == (1, 0)
        admission.release()
        assert admission.in_flight == 0

    async def test_retry_after_scales_with_long_timeouts(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Clients are told to come back after a tenth of the queue timeout (at least 1 s)."""
        expire_now = asyncio.timeout
        monkeypatch.setattr(asyncio, "timeout", lambda _: expire_now(0))
        admission = Admission(1)
        await admission.acquire(0)
        with pytest.raises(QueueTimeout) as caught:
            await admission.acquire(30)
        assert caught.value.retry_after == 3.0
        assert "30 s" in caught.value.message

    async def test_growing_capacity_admits_waiters_at_once(self) -> None:
        """When the node reports more slots, queued requests start without any release."""
        admission = Admission(1)
        await admission.acquire(0)
        tasks = [waiting(admission) for _ in range(3)]
        await settle()
        admission.capacity = 3
        await settle()
        assert [t.done() for t in tasks] == [True, True, False]
        assert (admission.in_flight, admission.queued) == (3, 1)
        admission.capacity = 4
        await asyncio.gather(*tasks)

    async def test_shrinking_capacity_holds_new_requests(self) -> None:
        """After shrinking, nobody is admitted until in-flight work drops below the new size."""
        admission = Admission(3)
        for _ in range(3):
            await admission.acquire(0)
        admission.capacity = 1
        task = waiting(admission)
        admission.release()
        admission.release()
        await settle()
        assert not task.done()
        admission.release()
        await task
        assert admission.in_flight == 1

    async def test_capacity_is_at_least_one(self) -> None:
        """A node that reports no slots still takes one request at a time."""
        admission = Admission(0)
        assert admission.capacity == 1
        admission.capacity = -5
        assert admission.capacity == 1

    async def test_load_counts_queue_per_slot(self) -> None:
        """Load is outstanding work (running and queued) per slot."""
        admission = Admission(2)
        await admission.acquire(0)
        await admission.acquire(0)
        task = waiting(admission)
        await settle()
        assert admission.load == 1.5
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def test_slot_is_released_when_the_block_raises(self) -> None:
        """The context manager hands the slot back whatever happens inside."""
        admission = Admission(1)
        with pytest.raises(RuntimeError):
            async with admission.slot(LONG):
                assert admission.in_flight == 1
                raise RuntimeError
        assert admission.in_flight == 0

    async def test_cancelled_waiter_leaves_the_queue(self) -> None:
        """A client that goes away while queued frees its place."""
        admission = Admission(1)
        await admission.acquire(0)
        task = waiting(admission)
        await settle()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert (admission.in_flight, admission.queued) == (1, 0)

    async def test_waiter_cancelled_after_admission_returns_the_slot(self) -> None:
        """If a waiter is admitted and cancelled before it resumes, its slot is handed back."""
        admission = Admission(1)
        await admission.acquire(0)
        task = waiting(admission)
        await settle()
        admission.release()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert (admission.in_flight, admission.queued) == (0, 0)


@dataclass
class Visitors:
    """Requests against one Admission, each holding its slot until told to leave."""

    admission: Admission
    admitted: list[int] = field(default_factory=list)
    timed_out: list[int] = field(default_factory=list)
    leave: list[asyncio.Event] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    released: int = 0

    def arrive(self, timeout: float) -> None:
        i = len(self.tasks)
        self.leave.append(asyncio.Event())
        self.tasks.append(asyncio.create_task(self._visit(i, timeout)))

    async def _visit(self, i: int, timeout: float) -> None:
        try:
            await self.admission.acquire(timeout)
        except QueueTimeout:
            self.timed_out.append(i)
            return
        self.admitted.append(i)
        assert self.admission.in_flight <= self.admission.capacity
        await self.leave[i].wait()
        self.admission.release()
        self.released += 1

    def release_oldest(self) -> None:
        holding = [i for i in self.admitted if not self.leave[i].is_set()]
        if holding:
            self.leave[holding[0]].set()

    def check(self) -> None:
        admission = self.admission
        assert admission.in_flight <= admission.capacity
        assert admission.in_flight == len(self.admitted) - self.released
        assert admission.queued == 0 or admission.free == 0
        assert self.admitted == sorted(self.admitted)


operations = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.sampled_from([LONG, LONG, 0.0, 0.001, 0.005])),
        st.tuples(st.just("release"), st.just(0.0)),
        st.tuples(st.just("grow"), st.sampled_from([1.0, 2.0])),
        st.tuples(st.just("sleep"), st.sampled_from([0.0, 0.002, 0.006])),
    ),
    max_size=30,
)


@settings(max_examples=80, deadline=None)
@given(capacity=st.integers(1, 3), ops=operations)
async def test_random_traffic_keeps_the_promises(
    capacity: int, ops: list[tuple[str, float]]
) -> None:
    """Under random arrivals, releases, growth and timeouts: never over capacity, FIFO, no
    idle slot while someone waits, and every timed-out waiter leaves its slot behind."""
    visitors = Visitors(Admission(capacity))
    for op, value in ops:
        if op == "arrive":
            visitors.arrive(value)
        elif op == "release":
            visitors.release_oldest()
        elif op == "grow":
            visitors.admission.capacity += int(value)
        else:
            await asyncio.sleep(value)
        await settle()
        visitors.check()
    for event in visitors.leave:
        event.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*visitors.tasks)
    visitors.check()
    assert (visitors.admission.in_flight, visitors.admission.queued) == (0, 0)
    assert sorted(visitors.admitted + visitors.timed_out) == list(range(len(visitors.tasks)))


class TestFairness:
    async def test_waiting_clients_take_turns(self) -> None:
        """One client's burst does not hold back another's request: a freed slot goes to the
        clients in turn, whatever order they queued in."""
        admission = Admission(1)
        await admission.acquire(0)
        order: list[str] = []

        async def visit(client: str) -> None:
            await admission.acquire(LONG, 0, client)
            order.append(client)

        tasks = [asyncio.create_task(visit("flood")) for _ in range(4)]
        await settle()
        tasks.append(asyncio.create_task(visit("quiet")))
        await settle()
        for _ in range(5):
            admission.release()
            await settle()
        await asyncio.gather(*tasks)
        assert order == ["flood", "quiet", "flood", "flood", "flood"]

    async def test_turns_are_kept_within_a_priority(self) -> None:
        """Turns between clients never put a chore ahead of a user's turn."""
        admission = Admission(1)
        await admission.acquire(0)
        order: list[tuple[str, int]] = []

        async def visit(client: str, priority: int) -> None:
            await admission.acquire(LONG, priority, client)
            order.append((client, priority))

        tasks = [asyncio.create_task(visit("a", 1)), asyncio.create_task(visit("b", 1))]
        await settle()
        tasks.append(asyncio.create_task(visit("b", 0)))
        await settle()
        for _ in range(3):
            admission.release()
            await settle()
        await asyncio.gather(*tasks)
        assert order == [("b", 0), ("a", 1), ("b", 1)]

    async def test_a_client_that_gives_up_leaves_no_empty_turn(self) -> None:
        """A timed-out client's place in the turns goes with it."""
        admission = Admission(1)
        await admission.acquire(0)
        with pytest.raises(QueueTimeout):
            await admission.acquire(0.01, 0, "gone")
        assert admission.queued == 0
        task = asyncio.create_task(admission.acquire(LONG, 0, "next"))
        await settle()
        admission.release()
        await settle()
        assert task.done() and admission.in_flight == 1


@settings(max_examples=80, deadline=None)
@given(arrivals=st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), min_size=1, max_size=25))
async def test_no_client_is_served_twice_while_another_waits(
    arrivals: list[tuple[str, bool]],
) -> None:
    """While a client waits, every other client is admitted at most once before the client's
    next turn: however many requests one client queues, the others wait one turn each."""
    admission = Admission(1)
    await admission.acquire(0)
    admitted: list[tuple[int, str]] = []
    waiting_since: dict[int, int] = {}

    async def visit(i: int, client: str) -> None:
        waiting_since[i] = len(admitted)
        await admission.acquire(LONG, 0, client)
        admitted.append((i, client))

    tasks = []
    for i, (client, release) in enumerate(arrivals):
        tasks.append(asyncio.create_task(visit(i, client)))
        await settle()
        if release and admission.in_flight:
            admission.release()
            await settle()
    while len(admitted) < len(tasks):
        admission.release()
        await settle()
    await asyncio.gather(*tasks)
    clients = {i: client for i, (client, _) in enumerate(arrivals)}
    last_turn: dict[str, int] = {}
    for position, (i, client) in enumerate(admitted):
        since = max(waiting_since[i], last_turn.get(client, 0))
        served_meanwhile = [c for _, c in admitted[since:position]]
        assert all(served_meanwhile.count(other) <= 1 for other in set(served_meanwhile))
        last_turn[client] = position + 1
    assert sorted(i for i, _ in admitted) == sorted(clients)
