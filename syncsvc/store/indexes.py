"""HNSW indexes: one per generation, with the target's metric, built without blocking writes.

pgvector's HNSW indexes ``vector`` up to 2,000 dimensions, ``halfvec`` up to 4,000 and ``bit``
up to 64,000. ``syncsvc.vector_strategy`` (migration 0002) picks the indexed expression for a
generation's dimensions; the search query orders by the very same expression, so the planner can
use the index, and quantized candidates are re-ranked with exact distances.

Indexes are built with ``CREATE INDEX CONCURRENTLY`` (never inside a transaction) by the daemon
once a generation's backfill is mostly done: building a graph over loaded rows is much faster
than growing it one insert at a time, and the backfill's inserts stay cheap meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from syncsvc.core.errors import ValidationError
from syncsvc.core.models import Generation, Metric, Target
from syncsvc.core.settings import SearchSettings
from syncsvc.core.types import AsyncConn
from syncsvc.core.waiting import sleep_unless
from syncsvc.db import quoting, sqlfiles, statements
from syncsvc.db.catalog import load_targets

if TYPE_CHECKING:
    from syncsvc.core.host import Host

logger = logging.getLogger(__name__)

EXACT_COUNT_BELOW = 100_000
"""Below this many estimated rows, count exactly (cheap) rather than trust planner estimates."""


@dataclass(frozen=True)
class Strategy:
    """How a generation's vectors are indexed and searched."""

    kind: str
    """'vector', 'halfvec' (2,001-4,000 dims) or 'binary' (above 4,000, re-ranked)."""
    index_expr: str
    opclass: str
    ann_expr: str
    candidates_factor: int
    min_candidates: int


@dataclass(frozen=True)
class IndexInfo:
    name: str
    valid: bool
    definition: str
    bytes: int


@dataclass(frozen=True)
class Progress:
    """How far a generation's backfill is, from table statistics or exact counts."""

    source_rows: int
    vector_rows: int

    def fraction(self) -> float:
        return 1.0 if self.source_rows <= 0 else min(1.0, self.vector_rows / self.source_rows)


def index_name(generation: Generation) -> str:
    return f"{generation.table_name}_hnsw"


async def strategy(conn: AsyncConn, dimensions: int, metric: Metric) -> Strategy:
    cur = await conn.execute(
        sqlfiles.query("search", "vector_strategy"),
        {"dimensions": dimensions, "metric": metric.value},
    )
    row = await cur.fetchone()
    assert row is not None
    return Strategy(**row)


async def index_info(
    conn: AsyncConn, generation: Generation, name: str | None = None
) -> IndexInfo | None:
    cur = await conn.execute(
        sqlfiles.query("search", "index_info"),
        {"table": generation.table_name, "name": name or index_name(generation)},
    )
    row = await cur.fetchone()
    return IndexInfo(**row) if row else None


def create_statement(
    target: Target, generation: Generation, plan: Strategy, settings: SearchSettings, name: str
) -> sql.Composed:
    """``CREATE INDEX CONCURRENTLY`` for a generation (the expression comes from the strategy)."""
    return sql.SQL(
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} USING hnsw ({expr} {ops}) "
        "WITH (m = {m}, ef_construction = {ef})"
    ).format(
        name=quoting.ident(name),
        table=statements.vector_table(generation),
        expr=sql.SQL(plan.index_expr),
        ops=quoting.ident(plan.opclass),
        m=quoting.literal(settings.hnsw_m),
        ef=quoting.literal(settings.hnsw_ef_construction),
    )


async def _drop(conn: AsyncConn, name: str) -> None:
    await conn.execute(
        sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS syncsvc.{}").format(quoting.ident(name))
    )


async def build_index(
    conn: AsyncConn,
    target: Target,
    generation: Generation,
    settings: SearchSettings | None = None,
    *,
    rebuild: bool = False,
) -> IndexInfo:
    """Build the generation's HNSW index concurrently; a no-op when a valid one exists.

    An invalid index left by an interrupted build is dropped and built again. With ``rebuild``
    (e.g. new ``m``/``ef_construction``) a new index is built beside the old one and swapped in,
    so searches stay indexed throughout.
    """
    if not conn.autocommit or conn.info.transaction_status != 0:
        raise ValidationError("CREATE INDEX CONCURRENTLY needs an autocommit connection")
    settings = settings or SearchSettings()
    name = index_name(generation)
    existing = await index_info(conn, generation)
    if existing is not None and existing.valid and not rebuild:
        return existing
    plan = await strategy(conn, generation.dimensions, target.metric)
    rebuilding = existing is not None and existing.valid
    building = f"{name}_new" if rebuilding else name
    if rebuilding:
        await _drop(conn, building)  # the leftover of an interrupted rebuild, if any
    elif existing is not None:
        await _drop(conn, name)  # invalid: an interrupted CONCURRENTLY build
    if settings.maintenance_work_mem:
        # HNSW builds are far faster while the graph fits in maintenance_work_mem.
        await conn.execute(
            sqlfiles.query("ops", "set_maintenance_work_mem"),
            {"value": settings.maintenance_work_mem},
        )
    logger.info(
        "building %s index %s on %s (%d dims, %s)",
        plan.kind,
        building,
        generation.table_name,
        generation.dimensions,
        plan.opclass,
    )
    try:
        await conn.execute(create_statement(target, generation, plan, settings, building))
    finally:
        if settings.maintenance_work_mem:
            await conn.execute(sqlfiles.query("ops", "reset_maintenance_work_mem"))
    if building != name:
        await _drop(conn, name)
        await conn.execute(
            sql.SQL("ALTER INDEX syncsvc.{} RENAME TO {}").format(
                quoting.ident(building), quoting.ident(name)
            )
        )
    info = await index_info(conn, generation)
    assert info is not None and info.valid
    return info


async def drop_index(conn: AsyncConn, generation: Generation) -> bool:
    existing = await index_info(conn, generation)
    if existing is None:
        return False
    await _drop(conn, existing.name)
    return True


async def progress(conn: AsyncConn, target: Target, generation: Generation) -> Progress:
    """Source rows vs. rows with a vector; planner estimates for big tables, else counts."""
    cur = await conn.execute(
        sqlfiles.query("search", "table_estimates"),
        {
            "source_schema": target.source_schema,
            "source_table": target.source_table,
            "vector_table": generation.table_name,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    source, vectors = row["source"], row["vectors"]
    if source < 0 or source < EXACT_COUNT_BELOW:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {}").format(statements.source(target))
        )
        source = (await cur.fetchone() or {"n": 0})["n"]
    if vectors < 0 or vectors < EXACT_COUNT_BELOW:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) AS n FROM {} WHERE chunk = 0").format(
                statements.vector_table(generation)
            )
        )
        vectors = (await cur.fetchone() or {"n": 0})["n"]
    return Progress(source_rows=int(source), vector_rows=int(vectors))


async def ensure_indexes(
    pool: AsyncConnectionPool[AsyncConn], settings: SearchSettings
) -> list[str]:
    """Build the missing index of every live generation whose backfill is far enough along."""
    built: list[str] = []
    async with pool.connection() as conn:
        targets = await load_targets(conn)
    for target in targets:
        for generation in target.live_generations:
            async with pool.connection() as conn:
                info = await index_info(conn, generation)
                if info is not None and info.valid:
                    continue
                done = await progress(conn, target, generation)
                if done.fraction() < settings.index_build_fraction:
                    continue
                await build_index(conn, target, generation, settings)
            built.append(index_name(generation))
    return built


async def index_service(host: Host) -> None:
    """Daemon service: periodically index generations whose backfill is (mostly) done."""
    settings = host.settings.search
    while not host.stop_event.is_set():
        if await sleep_unless(host.stop_event, settings.index_check_interval_seconds):
            return
        try:
            await ensure_indexes(host.pool, settings)
        except asyncio.CancelledError:
            raise
        except Exception:
            # An index is an optimisation: log and try again next time, never stop syncing.
            logger.exception("building search indexes failed; retrying later")
