"""Re-embedding jobs against a real PostgreSQL: request, backfill, pause/resume/cancel, dry run."""

from __future__ import annotations

import asyncio
import random

import psycopg
import pytest

from syncsvc import jobs
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import GenerationState
from syncsvc.core.settings import ProviderSettings
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.jobs import BACKFILL_PRIORITY, JobState
from syncsvc.ops import migrate
from syncsvc.providers.local import LocalHashProvider
from syncsvc.store import promote
from tests.helpers import queue_empty, running_daemon, scalar, wait_for
from tests.jobs_support import (
    DIMS,
    assert_generation_matches_source,
    job_settings,
    make_docs,
    vector_count,
)


async def _initial_sync(conn: AsyncConn, db_url: str, rows: int) -> None:
    async with running_daemon(db_url, job_settings()):
        await wait_for(lambda: queue_empty(conn))
    assert await vector_count(conn, "docs_embeddings") == rows


async def test_request_reembed_sql_creates_job_generation_and_table(conn: AsyncConn) -> None:
    await make_docs(conn, 3)
    await conn.execute("LISTEN syncsvc_wakeup")
    job_id = await scalar(conn, "SELECT syncsvc.request_reembed('docs', 'local-hash', 128)")
    notifies = []
    async for n in conn.notifies(timeout=1):
        notifies.append(n.payload)
        break
    assert notifies == [f"job:{job_id}"]
    job = await jobs.get_job(conn, job_id)
    assert job.state is JobState.PENDING and job.dimensions == 128
    target = await get_target(conn, "docs")
    building = next(g for g in target.generations if g.id == job.generation_id)
    assert building.state is GenerationState.BUILDING and building.space == "local-hash"
    # The SQL key is the same as the Python one, and the table has the Python DDL's shape.
    from syncsvc.core.models import generation_key

    assert building.key == generation_key("local-hash", 128, {})
    cur = await conn.execute(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull "
        "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relname IN ('docs_g1', %s) AND a.attnum > 0 ORDER BY c.relname, a.attnum",
        (building.table_name,),
    )
    shapes: dict[str, list[tuple[str, str, bool]]] = {}
    for r in await cur.fetchall():
        shapes.setdefault(r["relname"], []).append((r["attname"], r["type"], r["attnotnull"]))
    old, new = shapes["docs_g1"], shapes[building.table_name]
    assert [c for c in old if c[0] != "embedding"] == [c for c in new if c[0] != "embedding"]
    assert ("embedding", "vector(128)", True) in new
    # One open job per target; the active space cannot be requested again.
    with pytest.raises(psycopg.errors.UniqueViolation, match="already has re-embedding job"):
        await conn.execute("SELECT syncsvc.request_reembed('docs', 'local-hash', 64)")
    await jobs.cancel_job(conn, job_id, drop=True)
    with pytest.raises(ValidationError, match="already uses local-hash with 256"):
        await jobs.request_reembed(
            conn, job_settings(), "docs", model="local-hash", dimensions=DIMS
        )
    with pytest.raises(ValidationError, match="does not offer 100 dimensions"):
        await jobs.request_reembed(conn, job_settings(), "docs", model="local-hash", dimensions=100)
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0


async def test_reembed_while_writer_edits_then_promote(conn: AsyncConn, db_url: str) -> None:
    rows = 2000
    await make_docs(conn, rows)
    await _initial_sync(conn, db_url, rows)
    provider = LocalHashProvider()
    settings = job_settings(max_queued_rows=300, worker={"claim_size": 200})
    stop = asyncio.Event()
    edits = 0

    async def writer() -> None:
        nonlocal edits
        rng = random.Random(7)
        async with await aconnect(db_url) as wconn:
            next_id = rows + 1
            while not stop.is_set():
                op = rng.random()
                pk = rng.randint(1, rows)
                if op < 0.6:
                    await wconn.execute(
                        "UPDATE docs SET body = %s WHERE id = %s", (f"edit {rng.random()}", pk)
                    )
                elif op < 0.8:
                    await wconn.execute(
                        "INSERT INTO docs VALUES (%s, 'new', %s)", (next_id, f"new {next_id}")
                    )
                    next_id += 1
                else:
                    await wconn.execute("DELETE FROM docs WHERE id = %s", (pk,))
                edits += 1
                await asyncio.sleep(0.002)

    async with running_daemon(db_url, settings, provider):
        job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
        task = asyncio.create_task(writer())
        try:
            await wait_for(lambda: _state(conn, job.id, JobState.COMPLETED), timeout=60)
        finally:
            stop.set()
            await task
        await wait_for(lambda: queue_empty(conn))
        done = await jobs.get_job(conn, job.id)
        # Live edits went to the building generation too: it is complete without a rescan.
        assert done.passes == 0
        assert done.total_rows is not None and done.total_rows >= rows * 0.9
        assert edits > 100
        promoted = await promote.promote(conn, "docs", job.generation_id)
    assert promoted.coverage.complete
    target = await get_target(conn, "docs")
    assert target.active is not None and target.active.id == job.generation_id
    assert target.active.dimensions == 128
    assert next(g for g in target.generations if g.id == 1).state is GenerationState.RETIRED
    await assert_generation_matches_source(conn, "docs_embeddings", 128)
    # The backfill embedded each row about once: rows + edits, not twice the table.
    assert provider.inputs <= rows + 2 * edits + 50


async def _state(conn: AsyncConn, job_id: int, state: JobState) -> bool:
    return (await jobs.get_job(conn, job_id)).state is state


async def test_provider_change_then_dimension_cut_with_auto_promote(
    conn: AsyncConn, db_url: str
) -> None:
    """ "v3 → v4 (1024)" then "v4 1024 → 512", each while a writer edits, each auto-promoted."""
    rows = 600
    await make_docs(conn, rows)
    await _initial_sync(conn, db_url, rows)
    # A second vector space served by the same local model: a different provider stands in for
    # a different model (its generation key differs, so every row is embedded again).
    v4 = ProviderSettings(profile="local-hash", space="local-v4")
    settings = job_settings(max_queued_rows=150).model_copy(update={"providers": {"local-v4": v4}})
    provider = LocalHashProvider()
    stop = asyncio.Event()

    async def writer() -> None:
        rng = random.Random(3)
        async with await aconnect(db_url) as wconn:
            while not stop.is_set():
                await wconn.execute(
                    "UPDATE docs SET body = %s WHERE id = %s",
                    (f"rewritten {rng.random()}", rng.randint(1, rows)),
                )
                await asyncio.sleep(0.005)

    async with running_daemon(db_url, settings, provider):
        task = asyncio.create_task(writer())
        try:
            for dims, generation_id in ((1024, 2), (512, 3)):
                job = await jobs.request_reembed(
                    conn,
                    settings,
                    "docs",
                    model="local-hash",
                    dimensions=dims,
                    provider="local-v4",
                    auto_promote=True,
                )
                assert job.generation_id == generation_id
                await wait_for(lambda d=dims: _active_dims(conn, d), timeout=60)
        finally:
            stop.set()
            await task
        await wait_for(lambda: queue_empty(conn))
    target = await get_target(conn, "docs")
    assert target.active is not None and target.active.provider == "local-v4"
    assert target.active.space == "local-v4" and target.active.dimensions == 512
    assert [g.state.value for g in target.generations] == ["retired", "retired", "active"]
    finished = await jobs.list_jobs(conn)
    assert [j.state for j in finished] == [JobState.COMPLETED, JobState.COMPLETED]
    await assert_generation_matches_source(conn, "docs_embeddings", 512)


async def _active_dims(conn: AsyncConn, dims: int) -> bool:
    target = await get_target(conn, "docs")
    return target.active is not None and target.active.dimensions == dims


async def test_pause_resume_cancel_change_database_state(conn: AsyncConn, db_url: str) -> None:
    rows = 1500
    await make_docs(conn, rows)
    await _initial_sync(conn, db_url, rows)
    gate = asyncio.Event()

    class GatedProvider(LocalHashProvider):
        async def embed(self, request):  # type: ignore[no-untyped-def]
            await gate.wait()
            return await super().embed(request)

    provider = GatedProvider()
    settings = job_settings(max_queued_rows=100, chunk_rows=50, worker={"claim_size": 10})
    async with running_daemon(db_url, settings, provider):
        job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
        table = f"docs_g{job.generation_id}"
        await wait_for(lambda: _backfill_queued(conn, 100))
        paused = await jobs.pause_job(conn, job.id)
        assert paused.state is JobState.PAUSED
        # Waiting rows went back; only those already claimed by the worker remain.
        left = await _backfill_rows(conn, pending_only=True)
        assert left == 0
        assert paused.cursor_inclusive and paused.cursor is not None
        gate.set()
        await wait_for(lambda: _backfill_queued(conn, 0))
        at_pause = await vector_count(conn, table)
        inputs = provider.inputs
        await asyncio.sleep(0.5)
        assert await vector_count(conn, table) == at_pause < rows
        assert provider.inputs == inputs
        assert (await jobs.get_job(conn, job.id)).state is JobState.PAUSED

        resumed = await jobs.resume_job(conn, job.id)
        assert resumed.state is JobState.RUNNING
        await wait_for(lambda: _state(conn, job.id, JobState.COMPLETED), timeout=60)
        # Nothing was embedded twice across the pause.
        assert provider.inputs == rows
        await assert_generation_matches_source(conn, table, 128)

        # Cancel a second job halfway: its generation is retired and its rows leave the queue.
        gate.clear()
        await promote.promote(conn, "docs", job.generation_id)
        second = await jobs.request_reembed(
            conn, settings, "docs", model="local-hash", dimensions=64
        )
        await wait_for(lambda: _backfill_queued(conn, 100))
        cancelled = await jobs.cancel_job(conn, second.id)
        assert cancelled.state is JobState.CANCELLED and cancelled.finished_at is not None
        assert await _backfill_rows(conn, pending_only=True) == 0
        target = await get_target(conn, "docs")
        gen = next(g for g in target.generations if g.id == second.generation_id)
        assert gen.state is GenerationState.CANCELLED and not gen.live
        gate.set()
        await wait_for(lambda: queue_empty(conn))
        # A cancelled generation receives no more writes from live edits.
        hashes = f"SELECT array_agg(content_hash ORDER BY id) FROM syncsvc.{gen.table_name}"
        before = await scalar(conn, hashes)
        await conn.execute("UPDATE docs SET body = 'after cancel' WHERE id <= 300")
        await wait_for(lambda: queue_empty(conn))
        assert await scalar(conn, hashes) == before
        with pytest.raises(ValidationError, match="already cancelled"):
            await jobs.cancel_job(conn, second.id)
        with pytest.raises(ValidationError, match="only paused jobs resume"):
            await jobs.resume_job(conn, job.id)
        await promote.drop_generation(conn, "docs", gen.id)
        assert await scalar(conn, "SELECT to_regclass(%s) IS NULL", (f"syncsvc.{gen.table_name}",))


async def _backfill_rows(conn: AsyncConn, *, pending_only: bool = False) -> int:
    states = "('pending')" if pending_only else "('pending', 'in_flight')"
    return int(
        await scalar(
            conn,
            f"SELECT count(*) FROM syncsvc.queue WHERE priority = %s AND state IN {states}",
            (BACKFILL_PRIORITY,),
        )
    )


async def _backfill_queued(conn: AsyncConn, n: int) -> bool:
    return await _backfill_rows(conn) == n


async def test_dry_run_estimate_spends_nothing(conn: AsyncConn) -> None:
    await make_docs(conn, 200)
    await conn.execute("UPDATE docs SET title = '', body = '   ' WHERE id <= 10")
    est = await jobs.estimate(conn, job_settings(), "docs", model="local-hash", dimensions=128)
    assert est.rows == 190 and not est.sampled
    # local-hash counts words: "title N" + "body words number N" = 6 words per row.
    assert est.tokens == 190 * 6
    assert est.cost == 0.0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.generations") == 1


async def test_jobs_migration_downgrades_and_upgrades(db_url: str) -> None:
    arguments = "SELECT pronargs FROM pg_proc WHERE proname = 'request_reembed'"
    async with await aconnect(db_url) as c:
        assert await scalar(c, arguments) == 8  # 0006 added ``options``
    await asyncio.to_thread(migrate.downgrade, db_url, "0003")
    async with await aconnect(db_url) as c:
        assert await scalar(c, arguments) == 7
    await asyncio.to_thread(migrate.downgrade, db_url, "jobs@0001")
    async with await aconnect(db_url) as c:
        assert await scalar(c, "SELECT to_regclass('syncsvc.jobs') IS NULL")
        assert await scalar(c, "SELECT count(*) = 0 FROM pg_proc WHERE proname = 'request_reembed'")
    await asyncio.to_thread(migrate.upgrade, db_url)
    async with await aconnect(db_url) as c:
        assert await scalar(c, "SELECT to_regclass('syncsvc.jobs') IS NOT NULL")


async def test_a_cancelled_or_dropped_generation_takes_its_failed_rows_with_it(
    conn: AsyncConn, db_url: str
) -> None:
    """A row one model refused for good says nothing of the next re-embed: cancelling (or
    dropping) that generation forgets the row's failure, so the next job's backfill queues it
    instead of skipping it and counting it failed. Failures in the active generation stay."""
    await make_docs(conn, 10)
    await _initial_sync(conn, db_url, 10)
    settings = job_settings()

    async def fail(pk: int, generation: int) -> None:
        await conn.execute(
            "INSERT INTO syncsvc.queue (target_id, pk, state, attempts, last_error, "
            "failed_generation) SELECT id, %s::jsonb, 'failed', 6, '400 bad input', %s "
            "FROM syncsvc.targets WHERE name = 'docs'",
            (f"[{pk}]", generation),
        )

    async def failed() -> list[tuple[int, int]]:
        cur = await conn.execute(
            "SELECT (pk->>0)::int AS pk, failed_generation AS g FROM syncsvc.queue "
            "WHERE state = 'failed' ORDER BY 1"
        )
        return [(r["pk"], r["g"]) for r in await cur.fetchall()]

    active = (await get_target(conn, "docs")).active
    assert active is not None
    await fail(2, active.id)
    job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
    await fail(3, job.generation_id)
    cancelled = await jobs.cancel_job(conn, job.id, drop=True)
    # What `jobs cancel --drop --json` prints: the state it ended in.
    assert cancelled.state is JobState.CANCELLED
    assert await failed() == [(2, active.id)]

    second = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=64)
    await jobs.cancel_job(conn, second.id)  # kept as 'cancelled'
    await fail(4, second.generation_id)  # say, a late answer recorded before the cancel
    await promote.drop_generation(conn, "docs", second.generation_id)
    assert await failed() == [(2, active.id)]
