"""The reconciliation sweep: finds rows whose vector is missing or stale and enqueues them.

Triggers catch every change made while syncsvc is installed; the sweep catches the rest —
rows that existed before the target was added and edits made with triggers disabled. It walks
the source table in key order in chunks, so each statement is short.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.core.models import Generation, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, quoting, statements

logger = logging.getLogger(__name__)

SWEEP_PRIORITY = 1
"""Below live edits (0), so a big backfill never delays fresh changes."""


@dataclass(frozen=True)
class SweepResult:
    scanned: int
    enqueued: int
    orphans_removed: int


@dataclass(frozen=True)
class ChunkResult:
    scanned: int
    stale: int
    enqueued: int
    cursor: list[object] | None
    scan_done: bool


def chunk_statement(
    target: Target,
    generation: Generation,
    *,
    first: bool,
    inclusive: bool,
    source: sql.Composable | None = None,
) -> sql.Composed:
    after: sql.Composable = sql.SQL("")
    if not first:
        after = sql.SQL("WHERE ({}) {} ({})").format(
            statements.pk_columns(target, "s"),
            sql.SQL(">=" if inclusive else ">"),
            statements.pk_from_json(target, sql.SQL("%(after)s::jsonb")),
        )
    cols = sql.SQL(", ").join(quoting.ident(c) for c in target.pk_columns)
    c_cols = sql.SQL(", ").join(quoting.ident("c", c) for c in target.pk_columns)
    desc = sql.SQL(" DESC, ").join(quoting.ident("x", c) for c in target.pk_columns)
    return sql.SQL(
        """WITH chunk AS (
               SELECT {cols}, {input} AS input, {has_text} AS has_text FROM {source} s {after}
               ORDER BY {cols} LIMIT %(scan)s
           ), stale AS (
               SELECT {c_cols}, {c_json} AS pk FROM chunk c
               LEFT JOIN {table} v ON {v_match} AND v.chunk = 0
               WHERE c.has_text AND (v.content_hash IS NULL
                   OR v.content_hash <> syncsvc.content_hash({key}, c.input))
               ORDER BY {c_cols} LIMIT %(room)s
           ), enqueued AS (
               INSERT INTO syncsvc.queue (target_id, pk, priority)
               SELECT {tid}, pk, %(priority)s FROM stale
               ON CONFLICT (target_id, pk) DO NOTHING
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM chunk) AS scanned,
                  (SELECT count(*) FROM stale) AS stale,
                  (SELECT count(*) FROM enqueued) AS enqueued,
                  (SELECT {x_json} FROM chunk x ORDER BY {desc} DESC LIMIT 1) AS last_scanned,
                  (SELECT x.pk FROM stale x ORDER BY {desc} DESC LIMIT 1) AS last_stale"""
    ).format(
        cols=cols,
        input=statements.input_expr(target, "s"),
        has_text=statements.has_text(target, "s"),
        source=source if source is not None else statements.source(target),
        after=after,
        c_cols=c_cols,
        c_json=statements.pk_json(target, "c"),
        table=statements.vector_table(generation),
        v_match=statements.pk_equals(target, "v", "c"),
        key=quoting.literal(generation.key),
        tid=quoting.literal(target.id),
        x_json=statements.pk_json(target, "x"),
        desc=desc,
    )


async def feed_chunk(
    conn: AsyncConn,
    target: Target,
    generation: Generation,
    *,
    cursor: list[object] | None,
    inclusive: bool,
    scan_rows: int,
    room: int,
    priority: int,
    source: sql.Composable | None = None,
) -> ChunkResult:
    """Scan up to ``scan_rows`` rows after ``cursor``; enqueue up to ``room`` stale ones.

    Shared by the sweep (active generation, whole table) and re-embedding jobs (a building
    generation, paced by ``room``, resumable from ``cursor``).
    """
    statement = chunk_statement(
        target, generation, first=cursor is None, inclusive=inclusive, source=source
    )
    cur = await conn.execute(
        statement,
        {
            "scan": scan_rows,
            "room": room,
            "priority": priority,
            "after": Jsonb(cursor) if cursor is not None else None,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    if row["stale"] >= room and row["last_stale"] is not None:
        # The room filled up inside the chunk: resume right after the last row taken.
        return ChunkResult(row["scanned"], row["stale"], row["enqueued"], row["last_stale"], False)
    done = row["scanned"] < scan_rows
    last = row["last_scanned"] if row["last_scanned"] is not None else cursor
    return ChunkResult(row["scanned"], row["stale"], row["enqueued"], last, done)


FIRST_CHUNK_ROWS = 500
"""A sweep's first chunk is small, so the first requests go out within milliseconds of its
start (a 5,000-row chunk held them ~0.15 s); chunks then double up to ``chunk_rows``."""


async def sweep_target(
    conn: AsyncConn,
    target: Target,
    *,
    chunk_rows: int = 5000,
    priority: int = SWEEP_PRIORITY,
    on_chunk: Callable[[], None] | None = None,
    source: sql.Composable | None = None,
) -> SweepResult:
    """Enqueue every row of ``target`` whose active-generation vector is missing or stale.

    ``on_chunk`` is called after each chunk that enqueued rows (each is committed on its own):
    a daemon starts embedding them while the sweep reads on. ``source``: one partition of the
    target's table only (just attached); orphans are then left to the caller."""
    generation = target.active
    if generation is None:
        return SweepResult(0, 0, 0)
    scanned = enqueued = 0
    cursor: list[object] | None = None
    size = min(chunk_rows, FIRST_CHUNK_ROWS)
    while True:
        chunk = await feed_chunk(
            conn,
            target,
            generation,
            cursor=cursor,
            inclusive=False,
            scan_rows=size,
            room=size,
            priority=priority,
            source=source,
        )
        size = min(chunk_rows, size * 2)
        scanned += chunk.scanned
        enqueued += chunk.enqueued
        if chunk.enqueued and on_chunk is not None:
            on_chunk()
        if chunk.scan_done or chunk.cursor is None:
            break
        cursor = chunk.cursor
    orphans = await remove_orphans(conn, target) if source is None else 0
    if enqueued or orphans:
        await common.notify(conn, statements.QUEUE_CHANNEL, str(target.id))
        logger.info(
            "sweep of %s: %d rows scanned, %d enqueued, %d orphan vectors removed",
            target.name,
            scanned,
            enqueued,
            orphans,
        )
    return SweepResult(scanned, enqueued, orphans)


async def remove_orphans(conn: AsyncConn, target: Target) -> int:
    """Delete vectors whose source row no longer exists (e.g. deleted while triggers were off)."""
    removed = 0
    for generation in target.generations:
        cur = await conn.execute(
            sql.SQL(
                "DELETE FROM {table} v WHERE NOT EXISTS (SELECT 1 FROM {source} s WHERE {match})"
            ).format(
                table=statements.vector_table(generation),
                source=statements.source(target),
                match=statements.pk_equals(target, "s", "v"),
            )
        )
        removed += cur.rowcount
    return removed
