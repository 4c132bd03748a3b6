"""Cron-style schedules from configuration, run once per firing however many daemons run.

Every daemon schedules every entry with APScheduler. When an entry fires, the daemon inserts
``(entry, scheduled fire time)`` into ``syncsvc.schedule_runs``; the primary key lets exactly
one insert succeed, and only that daemon runs the action. The fire time is the trigger's own
grid point, so daemons whose timers fire a few milliseconds apart still agree on it.

Configuration (``syncsvc.toml``)::

    [schedules.nightly_sweep]
    cron = "0 3 * * *"
    action = "sweep"

    [schedules.reembed_v4]
    cron = "0 1 * * 6"
    action = "reembed"
    target = "articles"
    model = "text-embedding-v4"
    dimensions = 512
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from apscheduler.triggers.cron import CronTrigger

from syncsvc import jobs
from syncsvc.core.errors import ValidationError
from syncsvc.core.host import Host, HostSnapshot
from syncsvc.core.settings import ScheduleEntry
from syncsvc.db import sqlfiles
from syncsvc.queue import failures

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler
    from psycopg_pool import AsyncConnectionPool

    from syncsvc.core.settings import Settings
    from syncsvc.core.types import AsyncConn, Sweep

logger = logging.getLogger(__name__)

Action = Callable[["Host", ScheduleEntry], Awaitable[object]]
"""A scheduled action; its host's ``sweep`` skips the leader gate (``ClaimedFiring``)."""

LOOKBACK = dt.timedelta(minutes=10)
"""How late a firing may run and still be recognised as the same grid point."""


class ClaimedFiring:
    """The host as a claimed firing sees it: its ``sweep`` is not the scale-out leader gate's,
    since this firing is already claimed by exactly one daemon, which must not skip it for not
    being the leader."""

    def __init__(self, host: Host, sweep_now: Sweep) -> None:
        self._host = host
        self._sweep_now = sweep_now

    @property
    def id(self) -> str:
        return self._host.id

    @property
    def settings(self) -> Settings:
        return self._host.settings

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConn]:
        return self._host.pool

    @property
    def stop_event(self) -> asyncio.Event:
        return self._host.stop_event

    @property
    def wake(self) -> asyncio.Event:
        return self._host.wake

    async def sweep(self, target_id: int | None = None) -> int:
        return await self._sweep_now(target_id)

    def snapshot(self) -> HostSnapshot:
        return self._host.snapshot()


async def _sweep(host: Host, entry: ScheduleEntry) -> int:
    return await host.sweep()


async def _retry_failed(host: Host, entry: ScheduleEntry) -> int:
    async with host.pool.connection() as conn:
        retried = await failures.retry_failed(conn, entry.target)
    if retried:
        logger.info("scheduled retry: %d failed rows queued again", retried)
        host.wake.set()
    return retried


async def _reembed(host: Host, entry: ScheduleEntry) -> int | None:
    assert entry.target and entry.model and entry.dimensions
    async with host.pool.connection() as conn:
        for job in await jobs.list_jobs(conn, open_only=True):
            if job.target == entry.target:
                logger.info("scheduled re-embed of %s: job %d still open", entry.target, job.id)
                return None
        try:
            created = await jobs.request_reembed(
                conn,
                host.settings,
                entry.target,
                model=entry.model,
                dimensions=entry.dimensions,
                provider=entry.provider,
                auto_promote=entry.auto_promote,
            )
        except ValidationError as exc:
            logger.warning("scheduled re-embed of %s not started: %s", entry.target, exc)
            return None
    logger.info("scheduled re-embed of %s: job %d created", entry.target, created.id)
    return created.id


ACTIONS: dict[str, Action] = {
    "sweep": _sweep,
    "retry_failed": _retry_failed,
    "reembed": _reembed,
}
"""Scheduled actions by name; tests and extensions may register more."""


def trigger(entry: ScheduleEntry) -> CronTrigger:
    """A CronTrigger for 5-field (minute first) or 6-field (second first) expressions."""
    fields = entry.cron.split()
    try:
        if len(fields) == 5:
            return CronTrigger.from_crontab(entry.cron, timezone=entry.timezone)
        if len(fields) == 6:
            second, minute, hour, day, month, dow = fields
            return CronTrigger(
                second=second,
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=dow,
                timezone=entry.timezone,
            )
    except (ValueError, LookupError) as exc:
        raise ValidationError(f"invalid cron expression {entry.cron!r}: {exc}") from None
    raise ValidationError(f"cron expression {entry.cron!r} must have 5 or 6 fields")


def validate(name: str, entry: ScheduleEntry) -> None:
    if entry.action not in ACTIONS:
        known = ", ".join(sorted(ACTIONS))
        raise ValidationError(f"schedule {name}: unknown action {entry.action!r} ({known})")
    if entry.action == "reembed" and not (entry.target and entry.model and entry.dimensions):
        raise ValidationError(f"schedule {name}: reembed needs target, model and dimensions")
    trigger(entry)


def fire_time(cron: CronTrigger, now: dt.datetime) -> dt.datetime:
    """The latest grid point of ``cron`` at or before ``now``: the firing being run."""
    latest: dt.datetime | None = None
    point = cron.get_next_fire_time(None, now - LOOKBACK)
    while point is not None and point <= now:
        latest = point
        point = cron.get_next_fire_time(point, point + dt.timedelta(seconds=1))
    if latest is None:
        return now.replace(microsecond=0)
    return latest


class ScheduledRunner:
    """Runs configured entries for one daemon, claiming each firing in the database."""

    def __init__(self, host: Host, scheduler: AsyncIOScheduler, sweep_now: Sweep) -> None:
        self.host = host
        self.scheduler = scheduler
        self.claimed = ClaimedFiring(host, sweep_now)
        """What actions get: the host, sweeping without the leader gate."""
        self.ran: dict[str, int] = {}
        self.skipped: dict[str, int] = {}
        """Firings another daemon claimed first."""

    def install(self) -> None:
        """Add every configured entry to the daemon's scheduler (not started here)."""
        entries = self.host.settings.schedules
        for name, entry in entries.items():
            validate(name, entry)
            self.scheduler.add_job(
                self.fire,
                trigger(entry),
                args=(name, entry),
                id=f"schedule:{name}",
                name=f"schedule {name} ({entry.action})",
                max_instances=1,
                coalesce=True,
                misfire_grace_time=int(LOOKBACK.total_seconds()),
            )
        if not any(e.action == "sweep" for e in entries.values()):
            # No sweep schedule configured: every daemon sweeps on an interval, as before.
            self.scheduler.add_job(
                self._sweep,
                "interval",
                seconds=self.host.settings.worker.sweep_interval_seconds,
                id="sweep",
                name="reconciliation sweep",
                max_instances=1,
                coalesce=True,
            )

    async def _sweep(self) -> int:
        # Through the host's sweep gate (the scale-out leader), looked up at call time.
        return await self.host.sweep()

    async def fire(self, name: str, entry: ScheduleEntry, when: dt.datetime | None = None) -> Any:
        """Run ``entry`` if this daemon is the first to claim the firing (default: current)."""
        if when is None:
            when = fire_time(trigger(entry), dt.datetime.now(dt.UTC))
        async with self.host.pool.connection() as conn:
            cur = await conn.execute(
                sqlfiles.query("jobs", "claim_schedule_run"),
                {"job": name, "fire_time": when, "daemon": self.host.id},
            )
            if cur.rowcount == 0:
                self.skipped[name] = self.skipped.get(name, 0) + 1
                return None
            await conn.execute(sqlfiles.query("jobs", "prune_schedule_runs"), {"job": name})
        self.ran[name] = self.ran.get(name, 0) + 1
        error: str | None = None
        result: Any = None
        try:
            result = await ACTIONS[entry.action](self.claimed, entry)
        except Exception as exc:
            # A failed firing is recorded and logged; the schedule and the daemon carry on.
            error = repr(exc)
            logger.exception("scheduled %s (%s) failed", name, entry.action)
        async with self.host.pool.connection() as conn:
            await conn.execute(
                sqlfiles.query("jobs", "finish_schedule_run"),
                {"job": name, "fire_time": when, "error": error},
            )
        return result
