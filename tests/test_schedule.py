"""Cron schedules: each firing runs exactly once across daemons; the shipped actions work."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt

import pytest

from syncsvc import jobs
from syncsvc.core.errors import ValidationError
from syncsvc.core.settings import ScheduleEntry
from syncsvc.core.types import AsyncConn
from syncsvc.daemon import schedule
from syncsvc.daemon.process import Daemon
from syncsvc.jobs import JobState
from tests.helpers import running_daemon, scalar, wait_for
from tests.jobs_support import job_settings, make_docs


def test_fire_time_is_the_grid_point_at_or_before_now() -> None:
    every_two = schedule.trigger(ScheduleEntry(cron="*/2 * * * * *", action="sweep"))
    now = dt.datetime(2026, 1, 1, 12, 0, 5, 300_000, tzinfo=dt.UTC)
    assert schedule.fire_time(every_two, now) == now.replace(second=4, microsecond=0)
    hourly = schedule.trigger(ScheduleEntry(cron="0 * * * *", action="sweep"))
    late = dt.datetime(2026, 1, 1, 12, 3, 0, tzinfo=dt.UTC)
    assert schedule.fire_time(hourly, late) == late.replace(minute=0)
    with pytest.raises(ValidationError, match="5 or 6 fields"):
        schedule.trigger(ScheduleEntry(cron="* *", action="sweep"))
    with pytest.raises(ValidationError, match="invalid cron"):
        schedule.trigger(ScheduleEntry(cron="61 * * * *", action="sweep"))
    with pytest.raises(ValidationError, match="unknown action"):
        schedule.validate("x", ScheduleEntry(cron="* * * * *", action="nope"))
    with pytest.raises(ValidationError, match="needs target"):
        schedule.validate("x", ScheduleEntry(cron="* * * * *", action="reembed"))


async def test_two_daemons_run_each_firing_once(
    conn: AsyncConn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await conn.execute(
        "CREATE TABLE firings (daemon text, at timestamptz DEFAULT clock_timestamp())"
    )

    async def count(daemon: Daemon, entry: ScheduleEntry) -> None:
        async with daemon.pool.connection() as c:
            await c.execute("INSERT INTO firings (daemon) VALUES (%s)", (daemon.id,))

    monkeypatch.setitem(schedule.ACTIONS, "count", count)
    settings = job_settings().model_copy(
        update={"schedules": {"tick": ScheduleEntry(cron="* * * * * *", action="count")}}
    )
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_daemon(db_url, settings))
        second = await stack.enter_async_context(running_daemon(db_url, settings))
        await asyncio.sleep(4.5)
    runs = await scalar(conn, "SELECT count(*) FROM syncsvc.schedule_runs WHERE job = 'tick'")
    fired = await scalar(conn, "SELECT count(*) FROM firings")
    assert runs >= 3
    # Every claimed firing ran its action exactly once, by exactly one daemon...
    assert fired == runs
    assert first.schedules.ran.get("tick", 0) + second.schedules.ran.get("tick", 0) == runs
    # ...although both daemons' timers fired for (nearly) every one of them.
    for daemon in (first, second):
        attempts = daemon.schedules.ran.get("tick", 0) + daemon.schedules.skipped.get("tick", 0)
        assert attempts >= runs - 1
    assert (
        await scalar(conn, "SELECT count(*) FROM syncsvc.schedule_runs WHERE error IS NOT NULL")
        == 0
    )
    distinct = await scalar(conn, "SELECT count(DISTINCT date_trunc('second', at)) FROM firings")
    assert distinct >= runs - 1  # one run per second, not two in the same second


async def test_scheduled_retry_and_reembed(conn: AsyncConn, db_url: str) -> None:
    await make_docs(conn, 20)
    settings = job_settings().model_copy(
        update={
            "schedules": {
                "retry": ScheduleEntry(cron="0 0 1 1 *", action="retry_failed"),
                "v2": ScheduleEntry(
                    cron="0 0 1 1 *",
                    action="reembed",
                    target="docs",
                    model="local-hash",
                    dimensions=128,
                    auto_promote=True,
                ),
            }
        }
    )
    async with running_daemon(db_url, settings) as daemon:
        await wait_for(lambda: _vectors(conn, 20))
        await conn.execute(
            "INSERT INTO syncsvc.queue (target_id, pk, state, attempts) "
            "VALUES (1, '[3]', 'failed', 6)"
        )
        when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
        await daemon.schedules.fire("retry", settings.schedules["retry"], when)
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue WHERE state = 'failed'") == 0
        job_id = await daemon.schedules.fire("v2", settings.schedules["v2"], when)
        assert isinstance(job_id, int)
        # The same firing again is claimed already: nothing runs twice.
        assert await daemon.schedules.fire("v2", settings.schedules["v2"], when) is None
        await wait_for(lambda: _job_state(conn, job_id, JobState.COMPLETED))
    cur = await conn.execute("SELECT job, daemon, finished_at FROM syncsvc.schedule_runs")
    rows = await cur.fetchall()
    assert sorted(r["job"] for r in rows) == ["retry", "v2"]
    assert all(r["finished_at"] is not None for r in rows)


async def _vectors(conn: AsyncConn, n: int) -> bool:
    return bool(await scalar(conn, "SELECT count(*) = %s FROM syncsvc.docs_embeddings", (n,)))


async def _job_state(conn: AsyncConn, job_id: int, state: JobState) -> bool:
    return (await jobs.get_job(conn, job_id)).state is state
