"""The rounds in flight: claimed entries being embedded and written, each on a task of its own.

``rounds_in_flight`` slots take any priority; one more is kept for live edits, so a backfill
filling every round never makes an edit wait for a round to finish. A round that fails gives
its entries back (``Queue.release``) instead of losing them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from syncsvc.core.models import ClaimedItem
from syncsvc.core.settings import WorkerSettings
from syncsvc.core.types import RoundHook, RoundStats
from syncsvc.daemon.worker import Worker
from syncsvc.observe.errorlog import RepeatedErrors
from syncsvc.queue.entries import LIVE_PRIORITY, Queue

logger = logging.getLogger(__name__)


class Rounds:
    """Claims rounds into free slots and runs them; each finished round wakes the claimer."""

    def __init__(
        self,
        queue: Queue,
        worker: Worker,
        settings: WorkerSettings,
        *,
        wake: asyncio.Event,
        stop_event: asyncio.Event,
        errors: RepeatedErrors,
        stats: RoundStats,
        hooks: list[RoundHook],
    ) -> None:
        self.queue = queue
        self.worker = worker
        self.settings = settings
        self.wake = wake
        self.stop_event = stop_event
        self.errors = errors
        self.stats = stats
        self.hooks = hooks
        self._tasks: set[asyncio.Task[None]] = set()
        self._live: asyncio.Task[None] | None = None
        """The round on the slot kept for live edits, beyond ``rounds_in_flight``."""

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def finish(self, timeout: float) -> None:
        """Let the rounds in flight finish (up to ``timeout``), then cancel the rest."""
        if not self._tasks:
            return
        logger.info("finishing %d in-flight rounds (up to %.0fs)", len(self._tasks), timeout)
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def slot(self) -> tuple[bool, int | None]:
        """Whether a round may start now, and the largest priority number it may claim.

        ``rounds_in_flight`` rounds take any priority; one more slot is kept for live edits,
        so a backfill filling every round never makes an edit wait for a round to finish.
        """
        regular = len(self._tasks) - (self._live is not None)
        if regular < self.settings.rounds_in_flight:
            return True, None
        if self._live is None:
            return True, LIVE_PRIORITY
        return False, None

    async def claim(self, target_ids: list[int]) -> None:
        """Claim and start rounds of ``target_ids`` until nothing is due or no slot is free."""
        while not self.stop_event.is_set():
            free, max_priority = self.slot()
            if not free:
                return
            items = await self.queue.claim(target_ids, self.settings.claim_size, max_priority)
            if not items:
                return
            task = asyncio.create_task(self._round(items), name="syncsvc-round")
            self._tasks.add(task)
            task.add_done_callback(self._done)
            if max_priority is not None:
                self._live = task

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task is self._live:
            self._live = None
        self.wake.set()

    async def _round(self, items: list[ClaimedItem]) -> None:
        try:
            stats = await self.worker.process(items)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # A bug or a lost database must not lose rows: give them back, retry later. If the
            # release is lost too, the lease loop gives them back once the database answers.
            self.errors.report("round of %d entries failed; releasing them", len(items), exc=exc)
            with contextlib.suppress(Exception):
                await self.queue.release(items)
            await asyncio.sleep(1.0)
            return
        finally:
            self.queue.done(items[0].holder)
        self.stats.add(stats)
        for hook in self.hooks:
            result = hook(stats)
            if asyncio.iscoroutine(result):
                await result
