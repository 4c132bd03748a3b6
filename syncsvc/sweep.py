"""The reconciliation sweep: finds rows whose vector is missing or stale and enqueues them.

Triggers catch every change made while syncsvc is installed; the sweep catches the rest —
rows that existed before the target was added and edits made with triggers disabled. It walks
the source table in key order in chunks, so each statement is short.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc import statements
from syncsvc.database import AsyncConn
from syncsvc.models import Generation, Target

logger = logging.getLogger(__name__)

SWEEP_PRIORITY = 1
"""Below live edits (0), so a big backfill never delays fresh changes."""


@dataclass(frozen=True)
class SweepResult:
    scanned: int
    enqueued: int
    orphans_removed: int


def _chunk_statement(target: Target, generation: Generation, first: bool) -> sql.Composed:
    after = (
        sql.SQL("")
        if first
        else sql.SQL("WHERE ({}) > ({})").format(
            statements.pk_columns(target, "s"),
            statements.pk_from_json(target, sql.SQL("%(after)s::jsonb")),
        )
    )
    return sql.SQL(
        """WITH chunk AS (
               SELECT {pk_cols}, {input} AS input FROM {source} s {after}
               ORDER BY {pk_cols} LIMIT %(limit)s
           ), stale AS (
               SELECT {c_json} AS pk FROM chunk c
               LEFT JOIN {table} v ON {v_match} AND v.chunk = 0
               WHERE c.input ~ '\\S' AND (v.content_hash IS NULL
                   OR v.content_hash <> syncsvc.content_hash({key}, c.input))
           ), enqueued AS (
               INSERT INTO syncsvc.queue (target_id, pk, priority)
               SELECT {tid}, pk, %(priority)s FROM stale
               ON CONFLICT (target_id, pk) DO NOTHING
               RETURNING 1
           )
           SELECT (SELECT count(*) FROM chunk) AS scanned,
                  (SELECT count(*) FROM enqueued) AS enqueued,
                  (SELECT {last_json} FROM chunk c ORDER BY {c_cols} DESC LIMIT 1) AS last"""
    ).format(
        pk_cols=sql.SQL(", ").join(sql.Identifier(c) for c in target.pk_columns),
        input=statements.input_expr(target, "s"),
        source=statements.source(target),
        after=after,
        c_json=statements.pk_json(target, "c"),
        table=statements.vector_table(generation),
        v_match=statements.pk_equals(target, "v", "c"),
        key=sql.Literal(generation.key),
        tid=sql.Literal(target.id),
        last_json=statements.pk_json(target, "c"),
        c_cols=sql.SQL(" DESC, ").join(sql.Identifier("c", c) for c in target.pk_columns),
    )


async def sweep_target(
    conn: AsyncConn, target: Target, *, chunk_rows: int = 5000, priority: int = SWEEP_PRIORITY
) -> SweepResult:
    """Enqueue every row of ``target`` whose active-generation vector is missing or stale."""
    generation = target.active
    if generation is None:
        return SweepResult(0, 0, 0)
    scanned = enqueued = 0
    after: list[object] | None = None
    first_statement = _chunk_statement(target, generation, first=True)
    next_statement = _chunk_statement(target, generation, first=False)
    while True:
        statement = first_statement if after is None else next_statement
        cur = await conn.execute(
            statement,
            {
                "limit": chunk_rows,
                "priority": priority,
                "after": Jsonb(after) if after is not None else None,
            },
        )
        row = await cur.fetchone()
        assert row is not None
        scanned += row["scanned"]
        enqueued += row["enqueued"]
        if row["scanned"] < chunk_rows or row["last"] is None:
            break
        after = row["last"]
    orphans = await remove_orphans(conn, target)
    if enqueued or orphans:
        await conn.execute("SELECT pg_notify(%s, %s)", (statements.QUEUE_CHANNEL, str(target.id)))
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
