"""Request slots that serve the most urgent waiter first.

A plain ``asyncio.Semaphore`` is FIFO: during a re-embedding backfill a live edit's request would
queue behind hundreds of backfill requests. ``PriorityGate`` hands a freed slot to the waiter
with the lowest priority number (live edits are 0, sweeps 1, backfills 2), first come first
served within one priority, so an edit waits for one request to finish, not for the backfill.

Within one priority the slots are shared between tenants (targets): each waiter takes a turn
after its own tenant's previous waiter, never before the turn last served (start-time fair
queueing). A target with thousands of requests waiting gets every other turn when a second
target has work, not every turn until its backlog is gone; with one tenant the order is FIFO.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager


class PriorityGate:
    """At most ``slots`` holders at once; waiters are served by (priority, arrival)."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("a gate needs at least one slot")
        self.slots = slots
        self._free = slots
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()
        self._waiting = 0
        """Waiters neither served nor cancelled (cancelled ones stay in the heap until popped)."""
        self._served: dict[int, int] = {}
        """Per priority: the turn of the waiter served last."""
        self._queued: dict[tuple[int, Hashable], int] = {}
        """Per (priority, tenant): the turn of its last waiter."""

    @property
    def in_use(self) -> int:
        return self.slots - self._free

    @property
    def waiting(self) -> int:
        return self._waiting

    async def acquire(self, priority: int = 0, tenant: Hashable = None) -> None:
        """Take a slot, waiting behind every holder-to-be of a lower priority number, and
        within ``priority`` behind at most one waiter of each other ``tenant``."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        key = (priority, tenant)
        turn = max(self._queued.get(key, 0), self._served.get(priority, 0)) + 1
        self._queued[key] = turn
        heapq.heappush(self._waiters, (priority, turn, next(self._arrivals), future))
        self._waiting += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.cancelled():
                self._waiting -= 1
            else:
                # The slot was handed over just as we were cancelled: pass it on.
                self.release()
            raise

    def release(self) -> None:
        """Give the slot to the most urgent live waiter, or back to the pool."""
        while self._waiters:
            priority, turn, _, future = heapq.heappop(self._waiters)
            if not future.done():
                self._served[priority] = max(self._served.get(priority, 0), turn)
                self._waiting -= 1
                future.set_result(None)
                return
        self._free += 1

    @asynccontextmanager
    async def slot(self, priority: int = 0, tenant: Hashable = None) -> AsyncIterator[None]:
        await self.acquire(priority, tenant)
        try:
            yield
        finally:
            self.release()
