"""Per-target status: coverage of the active generation, backlog, failures, pause reason."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from syncsvc import drift, sqlfiles, statements
from syncsvc.catalog import load_targets
from syncsvc.database import AsyncConn


@dataclass(frozen=True)
class TargetStatus:
    target: str
    table: str
    rows: int
    embedded: int
    pending: int
    in_flight: int
    failed: int
    oldest_pending_seconds: float | None
    active_generation: int | None
    model: str | None
    dimensions: int | None
    paused_reason: str | None
    generations: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percent(done: int, total: int, digits: int = 1) -> str:
    """``done/total`` as a percentage rounded *down*: 23,004 of 23,008 is 99.9%, never 100%."""
    if total <= 0:
        return "-"
    scale = 10**digits
    value = math.floor(done * 100 * scale / total) / scale
    return f"{value:.{digits}f}%"


async def collect(conn: AsyncConn) -> list[TargetStatus]:
    cur = await conn.execute(sqlfiles.query("status", "queue_summary"))
    queue = {r["target_id"]: r for r in await cur.fetchall()}
    cur = await conn.execute(sqlfiles.query("status", "inbox_summary"))
    inbox = {r["target_id"]: r for r in await cur.fetchall()}
    cur = await conn.execute(sqlfiles.query("status", "failed_by_generation"))
    failed_in = {
        (r["target_id"], r["generation_id"]): int(r["failed"]) for r in await cur.fetchall()
    }
    result = []
    for target in await load_targets(conn):
        problem: str | None = None
        try:
            rows = await _count(
                conn, sql.SQL("SELECT count(*) AS n FROM {}").format(statements.source(target))
            )
        except psycopg.Error as exc:
            # A dropped or unreadable table is this target's problem; show it, go on.
            rows, problem = 0, drift.fault_reason(target, exc)
        generations: list[dict[str, Any]] = []
        for generation in target.generations:
            try:
                count = await _count(
                    conn,
                    sql.SQL("SELECT count(*) AS n FROM {} WHERE chunk = 0").format(
                        statements.vector_table(generation)
                    ),
                )
            except psycopg.Error as exc:
                count, problem = (
                    0,
                    problem or f"vector table unreadable: {exc.diag.message_primary}",
                )
            generations.append(
                {
                    "id": generation.id,
                    "state": generation.state.value,
                    "provider": generation.provider,
                    "model": generation.model,
                    "dimensions": generation.dimensions,
                    "embedded": count,
                    "failed": failed_in.get((target.id, generation.id), 0),
                }
            )
        active = target.active
        q = queue.get(target.id, {})
        captured = inbox.get(target.id, {})
        ages = [
            float(a)
            for a in (q.get("oldest_pending_seconds"), captured.get("oldest_seconds"))
            if a is not None
        ]
        oldest = max(ages) if ages else None
        result.append(
            TargetStatus(
                target=target.name,
                table=f"{target.source_schema}.{target.source_table}",
                rows=rows,
                embedded=next(
                    (g["embedded"] for g in generations if active and g["id"] == active.id), 0
                ),
                pending=q.get("pending", 0) + captured.get("pending", 0),
                in_flight=q.get("in_flight", 0),
                # Failures of the searched generation (or of no generation): a row failing
                # only in a generation being built is counted on that generation.
                failed=failed_in.get((target.id, None), 0)
                + (failed_in.get((target.id, active.id), 0) if active else 0),
                oldest_pending_seconds=oldest,
                active_generation=active.id if active else None,
                model=active.model if active else None,
                dimensions=active.dimensions if active else None,
                paused_reason=target.paused_reason or problem,
                generations=generations,
            )
        )
    return result


async def _count(conn: AsyncConn, query: sql.Composed) -> int:
    # A savepoint (or a transaction of its own): a failure must not abort the caller's.
    async with conn.transaction():
        cur = await conn.execute(query)
        row = await cur.fetchone()
    return int(row["n"]) if row else 0
