"""The job runner: feeds re-embedding jobs into the queue in key order, bounded, resumably.

Each tick, for each open job, in one transaction holding the job's row lock: scan the source
after the job's cursor, enqueue rows whose vector in the new generation is missing or stale
(at backfill priority, below live edits), and move the cursor. The cursor and the queue are
both durable, so after a crash or ``kill -9`` nothing is lost and nothing finished is redone:
rows before the cursor are done or still queued, rows after it were never enqueued.

A job holds at most ``max_queued`` rows in the queue at once; that bound is its share of the
embedding API, because the worker claims live edits first and those rows second.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc import jobs
from syncsvc.capture import drift, sweep
from syncsvc.core.errors import NotFoundError, SyncsvcError
from syncsvc.core.models import Generation, GenerationState, Target, generation_key
from syncsvc.core.settings import JobSettings, Settings
from syncsvc.core.types import AsyncConn
from syncsvc.core.waiting import sleep_unless
from syncsvc.db import common, sqlfiles, statements
from syncsvc.db.catalog import find_generation, get_target
from syncsvc.jobs.model import BACKFILL_PRIORITY, Job, JobState
from syncsvc.store import promote

if TYPE_CHECKING:
    from syncsvc.core.host import Host

logger = logging.getLogger(__name__)

MAX_CHUNKS_PER_TICK = 20
"""Scanning past already-current rows is cheap but not free: bound one transaction's work."""


async def _scalar(conn: AsyncConn, name: str, params: dict[str, object]) -> int:
    cur = await conn.execute(sqlfiles.query("jobs", name), params)
    row = await cur.fetchone()
    assert row is not None
    return int(next(iter(row.values())))


class JobRunner:
    """Feeds every open job a little at a time; safe to run in several daemons at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.conf: JobSettings = settings.jobs
        self._progress_at: dict[int, float] = {}

    async def tick(self, conn: AsyncConn) -> int:
        """Advance every workable job once; returns how many rows were enqueued."""
        cur = await conn.execute(sqlfiles.query("jobs", "workable_jobs"))
        enqueued = 0
        for row in await cur.fetchall():
            try:
                enqueued += await self._step(conn, row["id"])
            except NotFoundError:
                continue  # removed meanwhile (target or generation dropped)
            except (SyncsvcError, psycopg.Error) as exc:
                # One target's table or definition must not hold up every other job.
                if conn.broken or not drift.is_target_fault(exc):
                    raise
                await self._pause_target_of(conn, row["id"], exc)
        return enqueued

    async def _pause_target_of(self, conn: AsyncConn, job_id: int, exc: Exception) -> None:
        target = await get_target(conn, (await jobs.get_job(conn, job_id)).target)
        reason = await drift.diagnose(conn, target, exc)
        logger.error("pausing target %s (job %d): %s", target.name, job_id, reason)
        await conn.execute(
            sqlfiles.query("catalog", "pause_target"), {"id": target.id, "reason": reason}
        )

    async def _step(self, conn: AsyncConn, job_id: int) -> int:
        async with conn.transaction():
            cur = await conn.execute(sqlfiles.query("jobs", "lock_job"), {"id": job_id})
            if await cur.fetchone() is None:
                return 0  # another daemon is feeding it right now
            job = await jobs.get_job(conn, job_id)
            target = await get_target(conn, job.target)
            generation = find_generation(target, job.generation_id)
            if job.state is JobState.PENDING:
                job, generation = await self._start(conn, job, target, generation)
                if job.state is not JobState.RUNNING:
                    return 0
            if job.state is not JobState.RUNNING:
                return 0
            # A paused target's rows would not be claimed: fed again once it is resumed.
            idle = job.scan_done or target.paused_reason is not None
            enqueued = 0 if idle else await self._feed(conn, job, target, generation)
            if enqueued:
                await common.notify(conn, statements.QUEUE_CHANNEL, str(target.id))
            now = time.monotonic()
            if now - self._progress_at.get(job.id, 0.0) >= self.conf.progress_seconds:
                self._progress_at[job.id] = now
                await self._progress(conn, await jobs.get_job(conn, job.id), target, generation)
            return enqueued

    async def _start(
        self, conn: AsyncConn, job: Job, target: Target, generation: Generation
    ) -> tuple[Job, Generation]:
        """Validate a requested job against the provider profile, fix its key, count rows."""
        try:
            model, space = jobs.resolve_model(
                self.settings,
                generation.provider,
                generation.model,
                generation.dimensions,
                generation.options,
            )
        except SyncsvcError as exc:
            logger.error("job %d cannot start: %s", job.id, exc)
            await jobs.fail_job(conn, job, str(exc))
            return await jobs.get_job(conn, job.id), generation
        key = generation_key(space, generation.dimensions, generation.options)
        if key != generation.key:
            # request_reembed guessed the space without the provider profiles: correct it.
            # Vectors written under the guessed key would never match a hash: drop them.
            other = await _scalar_or_none(
                conn, "generation_by_key", {"target_id": target.id, "key": key}
            )
            if other is not None:
                await jobs.fail_job(
                    conn, job, f"target {target.name} already has this space as generation {other}"
                )
                return await jobs.get_job(conn, job.id), generation
            await conn.execute(
                sqlfiles.query("jobs", "rekey_generation"),
                {"id": generation.id, "key": key, "space": space},
            )
            await conn.execute(
                sql.SQL("DELETE FROM {}").format(statements.vector_table(generation))
            )
            generation = find_generation(await get_target(conn, target.name), generation.id)
        total = await self._count_rows(conn, target)
        await conn.execute(
            sqlfiles.query("jobs", "start_job"),
            {"id": job.id, "total_rows": total, "price": model.price_per_million_tokens},
        )
        logger.info(
            "job %d started: %s → generation %d (%s, %d dims), %d rows",
            job.id,
            target.name,
            generation.id,
            generation.model,
            generation.dimensions,
            total,
        )
        return await jobs.get_job(conn, job.id), generation

    @staticmethod
    async def _count_rows(conn: AsyncConn, target: Target) -> int:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {} s WHERE {}").format(
                statements.source(target), statements.has_text(target, "s")
            )
        )
        row = await cur.fetchone()
        return int(row["n"]) if row else 0

    async def _feed(self, conn: AsyncConn, job: Job, target: Target, generation: Generation) -> int:
        bound = job.max_queued or self.conf.max_queued_rows
        queued = await _scalar(
            conn,
            "backfill_in_queue",
            {"target_id": target.id, "priority": BACKFILL_PRIORITY},
        )
        cursor, inclusive = job.cursor, job.cursor_inclusive
        enqueued = 0
        scan_done = False
        moved = False
        for _ in range(MAX_CHUNKS_PER_TICK):
            room = bound - queued - enqueued
            if room <= 0:
                break
            result = await sweep.feed_chunk(
                conn,
                target,
                generation,
                cursor=cursor,
                inclusive=inclusive,
                scan_rows=self.conf.chunk_rows,
                room=room,
                priority=BACKFILL_PRIORITY,
            )
            enqueued += result.enqueued
            moved = moved or result.cursor != cursor or inclusive
            cursor, inclusive = result.cursor, False
            if result.scan_done:
                scan_done = True
                break
        if moved or scan_done:
            await conn.execute(
                sqlfiles.query("jobs", "advance"),
                {
                    "id": job.id,
                    "cursor": Jsonb(cursor) if cursor is not None else None,
                    "scan_done": scan_done,
                    "enqueued": enqueued,
                },
            )
        return enqueued

    async def _progress(
        self, conn: AsyncConn, job: Job, target: Target, generation: Generation
    ) -> None:
        cur = await conn.execute(
            sql.SQL(
                "SELECT count(*) FILTER (WHERE chunk = 0) AS done, "
                "coalesce(sum(tokens) FILTER (WHERE chunk = 0), 0) AS tokens FROM {}"
            ).format(statements.vector_table(generation))
        )
        row = await cur.fetchone()
        assert row is not None
        error = None
        total = None
        finished: promote.Coverage | None = None
        if job.scan_done:
            total = await self._count_rows(conn, target)
            error, finished = await self._maybe_finish(conn, job, target)
        await conn.execute(
            sqlfiles.query("jobs", "progress"),
            {
                "id": job.id,
                "done": row["done"],
                "total": total,
                "tokens": row["tokens"],
                "error": error,
            },
        )
        if finished is not None:
            await self._complete(conn, job, target, generation, finished)

    async def _maybe_finish(
        self, conn: AsyncConn, job: Job, target: Target
    ) -> tuple[str | None, promote.Coverage | None]:
        """A note on what the job waits for, or the coverage it completes with: every row
        current except rows failed for good (they never hold a job open)."""
        backlog = await _scalar(conn, "bulk_in_queue", {"target_id": target.id})
        if backlog:
            return None, None
        generation = find_generation(target, job.generation_id)
        measured = await promote.coverage(conn, target, generation)
        if not measured.complete:
            # Rows changed behind the triggers' back (or after a forced rewind, or while
            # failed rows sat in the queue): scan again whatever else failed; current rows
            # are skipped, so this costs reads, not API calls.
            await conn.execute(sqlfiles.query("jobs", "rescan"), {"id": job.id})
            logger.info(
                "job %d: %d rows missing after the scan; rescanning", job.id, measured.missing
            )
            return None, None
        held = await _scalar(conn, "held_by_dead", {"target_id": target.id})
        if held:
            note = f"waiting for {held} rows held by a daemon that died (taken over in seconds)"
            return note, None
        return None, measured

    async def _complete(
        self,
        conn: AsyncConn,
        job: Job,
        target: Target,
        generation: Generation,
        measured: promote.Coverage,
    ) -> None:
        """Mark the job completed with exact figures: done + failed = total at that moment."""
        note = None
        if measured.failed:
            note = (
                f"{measured.failed} rows failed for good (see 'syncsvc failed list "
                f"{target.name}'; 'syncsvc failed retry' tries them again)"
            )
        auto = job.auto_promote and generation.state is GenerationState.BUILDING
        if auto:
            refused = promote.refusal(
                target, generation, measured, max_failed=self.conf.promote_max_failed
            )
            if refused is not None:
                note = f"not promoted automatically: {refused}"
                auto = False
        await conn.execute(
            sqlfiles.query("jobs", "finish_job"),
            {
                "id": job.id,
                "done": measured.current + measured.allowed,
                "total": measured.rows,
                "failed": measured.failed,
                "error": note,
            },
        )
        logger.info(
            "job %d completed: generation %d, %s", job.id, generation.id, measured.describe()
        )
        if auto:
            # The target row is locked since _step: this is the same atomic switch as promote.
            await promote.promote_generation(
                conn, target, generation, max_failed=self.conf.promote_max_failed
            )


async def _scalar_or_none(conn: AsyncConn, name: str, params: dict[str, object]) -> int | None:
    cur = await conn.execute(sqlfiles.query("jobs", name), params)
    row = await cur.fetchone()
    return None if row is None else int(next(iter(row.values())))


async def run(host: Host) -> None:
    """Daemon service: feed jobs until the daemon stops."""
    runner = JobRunner(host.settings)
    interval = host.settings.jobs.poll_seconds
    while not host.stop_event.is_set():
        try:
            async with host.pool.connection() as conn:
                if await runner.tick(conn):
                    host.wake.set()
        except (SyncsvcError, psycopg.Error) as exc:
            # A deadlock victim or a lost connection: the job rows are intact, try next tick.
            logger.error("job runner: %s", exc)
        await sleep_unless(host.stop_event, interval)
