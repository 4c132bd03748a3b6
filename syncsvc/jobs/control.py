"""What admins do to a running job: pause, resume, cancel (and the runner: fail)."""

from __future__ import annotations

from dataclasses import replace

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.core.errors import ValidationError
from syncsvc.core.models import GenerationState, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, sqlfiles, statements
from syncsvc.db.catalog import find_generation, get_target
from syncsvc.jobs.model import BACKFILL_PRIORITY, Job, JobState, get_job


async def lock_job(conn: AsyncConn, job_id: int) -> Job:
    await conn.execute(sqlfiles.query("jobs", "lock_job_target"), {"id": job_id})
    await conn.execute(sqlfiles.query("jobs", "lock_job_wait"), {"id": job_id})
    return await get_job(conn, job_id)


async def set_state(conn: AsyncConn, job: Job, state: JobState, error: str | None = None) -> None:
    await conn.execute(
        sqlfiles.query("jobs", "set_state"), {"id": job.id, "state": state.value, "error": error}
    )


async def give_back(conn: AsyncConn, target: Target, job: Job) -> int:
    """Remove the job's rows still waiting in the queue and rewind its cursor to the first.

    Rows already being embedded finish. Rows before the rewound cursor are done, in flight, or
    queued by a live edit, so resuming skips nothing and redoes nothing.
    """
    first_typed = statements.pk_from_json(target, sql.SQL("d.pk"))
    cur = await conn.execute(
        sql.SQL(
            """WITH d AS (
                   DELETE FROM syncsvc.queue
                   WHERE target_id = %(target_id)s AND priority = %(priority)s
                     AND state = 'pending'
                   RETURNING pk
               )
               SELECT d.pk, count(*) OVER () AS n FROM d ORDER BY {} LIMIT 1"""
        ).format(first_typed),
        {"target_id": target.id, "priority": BACKFILL_PRIORITY},
    )
    row = await cur.fetchone()
    if row is None:
        return 0
    await conn.execute(sqlfiles.query("jobs", "rewind"), {"id": job.id, "cursor": Jsonb(row["pk"])})
    return int(row["n"])


async def pause_job(conn: AsyncConn, job_id: int) -> Job:
    """Stop feeding a job and give back its queued rows; its cursor keeps the position."""
    async with conn.transaction():
        job = await lock_job(conn, job_id)
        if job.state not in (JobState.PENDING, JobState.RUNNING):
            raise ValidationError(f"job {job_id} is {job.state.value}; only running jobs pause")
        await set_state(conn, job, JobState.PAUSED)
        await give_back(conn, await get_target(conn, job.target), job)
    return await get_job(conn, job_id)


async def resume_job(conn: AsyncConn, job_id: int) -> Job:
    """Continue a paused (or failed) job from its cursor."""
    async with conn.transaction():
        job = await lock_job(conn, job_id)
        if job.state not in (JobState.PAUSED, JobState.FAILED):
            raise ValidationError(f"job {job_id} is {job.state.value}; only paused jobs resume")
        # Never started: the daemon validates it first.
        state = JobState.RUNNING if job.started_at else JobState.PENDING
        try:
            await set_state(conn, job, state)
        except psycopg.errors.UniqueViolation:
            raise ValidationError(
                f"target {job.target} has another open job; cancel it first"
            ) from None
        await conn.execute(
            sqlfiles.query("jobs", "set_generation_state"),
            {"id": job.generation_id, "state": GenerationState.BUILDING.value},
        )
        await common.notify(conn, statements.QUEUE_CHANNEL, f"job:{job.id}")
    return await get_job(conn, job_id)


async def cancel_job(conn: AsyncConn, job_id: int, *, drop: bool = False) -> Job:
    """Cancel a job: spending on its generation stops when this commits.

    Its queued rows leave the queue; the generation becomes ``cancelled``, so no request is
    sent for it any more (a worker checks the state right before each request, once it holds
    a request slot) and answers to requests already in flight are discarded (the write checks
    the state under a lock). The generation is kept for inspection, dropped by ``syncsvc
    generation drop``, or, with ``drop``, deleted with its vector table right away.
    """
    async with conn.transaction():
        job = await lock_job(conn, job_id)
        if job.state is JobState.COMPLETED or job.state is JobState.CANCELLED:
            raise ValidationError(f"job {job_id} is already {job.state.value}")
        target = await get_target(conn, job.target)
        generation = find_generation(target, job.generation_id)
        if generation.state is GenerationState.ACTIVE:
            raise ValidationError(f"generation {generation.id} is already active")
        await set_state(conn, job, JobState.CANCELLED)
        await give_back(conn, target, job)
        await conn.execute(
            sqlfiles.query("jobs", "forget_generation_failures"), {"id": generation.id}
        )
        if drop:
            await conn.execute(sqlfiles.query("jobs", "delete_generation"), {"id": generation.id})
            await conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(statements.vector_table(generation))
            )
        else:
            await conn.execute(
                sqlfiles.query("jobs", "set_generation_state"),
                {"id": generation.id, "state": GenerationState.CANCELLED.value},
            )
    if drop:
        # Its row went with the generation (ON DELETE CASCADE): as it was when it went.
        return replace(job, state=JobState.CANCELLED)
    return await get_job(conn, job_id)


async def fail_job(conn: AsyncConn, job: Job, error: str) -> None:
    """Mark a job failed, and its generation, so nothing keeps writing to it (nor offers to
    promote it)."""
    await set_state(conn, job, JobState.FAILED, error)
    await conn.execute(
        sqlfiles.query("jobs", "set_generation_state"),
        {"id": job.generation_id, "state": GenerationState.FAILED.value},
    )
