"""The start of a backfill: the sweep's first chunk is small, and the claim right after it
reads the queue once (its statistics still say "empty")."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from syncsvc.capture.sweep import sweep_target
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles
from syncsvc.db.catalog import load_targets
from tests.helpers import scalar, text_targets


def _queue_scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every plan node that reads syncsvc.queue, however deep."""
    found = [plan] if plan.get("Relation Name") == "queue" else []
    for child in plan.get("Plans", []):
        found += _queue_scans(child)
    return found


async def test_a_claim_after_a_sweep_reads_the_queue_once_per_step(conn: AsyncConn) -> None:
    """The queue's statistics still say "empty" just after a sweep queued 2,000 rows: a plan
    that joins the round's priority back to the queue would rescan it once per queued row
    (quadratic: 1.8 s here, minutes for a large backlog)."""
    await text_targets(conn, names=("docs", "notes"), rows=2000)
    docs, notes = await load_targets(conn)
    assert (await sweep_target(conn, docs)).enqueued == 2000
    claim = sqlfiles.query("queue", "claim")
    cur = await conn.execute(
        sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + claim,
        {
            "target_ids": [docs.id, notes.id],
            "limit": 320,
            "max_priority": None,
            "worker": "plan-test/1",
            "lease_seconds": 60,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    (plan,) = row.values()
    scans = _queue_scans(plan[0]["Plan"])
    # Each read of the queue runs once, the fair share's once per running target; only the
    # locking and the update's lookups by row id or key may repeat, once per claimed row (with
    # fresher statistics the planner may join them otherwise).
    loops = {(s["Node Type"], s.get("Index Name")): s["Actual Loops"] for s in scans}
    assert loops.pop(("Index Scan", "queue_pkey"), 320) == 320
    assert loops.pop(("Tid Scan", None), 320) == 320
    assert loops.pop(("Index Scan", "queue_ready_by_target")) == 2  # docs, notes
    assert loops and set(loops.values()) == {1}, loops
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue WHERE state = 'in_flight'") == 320
    # The healthy neighbour's rows were never queued: only docs' rows were claimed.
    assert (
        await scalar(
            conn, "SELECT count(DISTINCT target_id) FROM syncsvc.queue WHERE state = 'in_flight'"
        )
        == 1
    )


async def test_the_first_sweep_chunk_is_small_and_chunks_then_grow(
    conn: AsyncConn, db_url: str
) -> None:
    """The first rows are claimable after 500, not after a full 5,000-row chunk: the first
    request goes out while the sweep reads on."""
    await text_targets(conn, names=("docs", "notes"), rows=6000)
    docs, _ = await load_targets(conn)
    queued: list[int] = []
    with psycopg.connect(db_url, autocommit=True) as other:

        def on_chunk() -> None:
            # Each chunk is committed before the claimer is woken: another session sees it.
            row = other.execute("SELECT count(*) FROM syncsvc.queue").fetchone()
            queued.append(int(row[0]) if row else -1)

        result = await sweep_target(conn, docs, chunk_rows=5000, on_chunk=on_chunk)
    assert result.enqueued == 6000
    assert queued == [500, 1500, 3500, 6000]  # chunks of 500, 1,000, 2,000, then the rest


async def _claim(conn: AsyncConn, target_ids: list[int], limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        sqlfiles.query("queue", "claim"),
        {
            "target_ids": target_ids,
            "limit": limit,
            "max_priority": None,
            "worker": "fair-test/1",
            "lease_seconds": 60,
        },
    )
    return list(await cur.fetchall())


async def test_a_round_shares_its_rows_between_the_targets_with_work(conn: AsyncConn) -> None:
    """Issue 22: 5,000 live entries of a bulk load on one target, queued before three live
    edits of another, at the same priority. The next round takes the edits, not 320 more of
    the bulk load; the bulk load's share is its oldest entries."""
    await text_targets(conn, names=("bulk", "live"), rows=0)
    bulk, live = await load_targets(conn)
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, priority, next_attempt_at, enqueued_at)"
        " SELECT %s, jsonb_build_array(i), 0, now() - interval '1 hour' + i * interval '1 ms',"
        " now() - interval '1 hour' FROM generate_series(1, 5000) i",
        (bulk.id,),
    )
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, priority)"
        " SELECT %s, jsonb_build_array(i), 0 FROM generate_series(1, 3) i",
        (live.id,),
    )
    rows = await _claim(conn, [bulk.id, live.id], 320)
    by_target = {
        t: sorted(r["pk"][0] for r in rows if r["target_id"] == t) for t in (bulk.id, live.id)
    }
    assert by_target[live.id] == [1, 2, 3]
    assert by_target[bulk.id] == list(range(1, 318))
    # Two rows for two targets with work: one each, however many more one has waiting.
    rows = await _claim(conn, [bulk.id, live.id], 2)
    assert [r["target_id"] for r in rows] == [bulk.id, bulk.id]  # live has nothing left
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, priority) VALUES (%s, '[9]', 0)", (live.id,)
    )
    rows = await _claim(conn, [bulk.id, live.id], 2)
    assert sorted(r["target_id"] for r in rows) == sorted([bulk.id, live.id])
    # A target not listed (paused) takes no share.
    assert await _claim(conn, [live.id], 5) == []
