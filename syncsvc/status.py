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


@dataclass(frozen=True)
class Unpromoted:
    """A complete generation left beside the active one: it doubles the cost of live edits."""

    target: str
    generation_id: int
    idle_seconds: float
    tokens_per_day: int
    """Tokens embedded for it in the last 24 hours (live edits it still receives)."""
    cost_per_day: float

    def warning(self) -> str:
        return (
            f"generation {self.generation_id} of {self.target} has been complete for "
            f"{self.idle_seconds / 3600:.1f} h but is neither promoted nor dropped: it costs "
            f"{self.tokens_per_day} tokens (${self.cost_per_day:.4f}) a day in live edits "
            f"('syncsvc promote {self.target} {self.generation_id}' or 'syncsvc generation "
            f"drop {self.target} {self.generation_id}')"
        )


async def unpromoted(conn: AsyncConn, grace_seconds: float) -> list[Unpromoted]:
    """Complete generations idle for more than ``grace_seconds``, with what they cost."""
    cur = await conn.execute(sqlfiles.query("status", "unpromoted"), {"grace": grace_seconds})
    found = []
    for row in await cur.fetchall():
        tokens = await _count(
            conn,
            sql.SQL(
                "SELECT coalesce(sum(tokens), 0) AS n FROM syncsvc.{} "
                "WHERE embedded_at > now() - interval '1 day'"
            ).format(sql.Identifier(row["table_name"])),
        )
        price = float(row["price_per_million_tokens"] or 0.0)
        found.append(
            Unpromoted(
                row["target"],
                row["generation_id"],
                row["idle_seconds"],
                tokens,
                tokens * price / 1e6,
            )
        )
    return found


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
