"""Switching a target's search to another generation, measuring coverage, dropping old ones.

Promotion happens in one transaction: the generations' states and the target's view change
together, so a search sees either the old space or the new one, never a mix. The view's
``DROP`` waits for searches already reading the old generation, which therefore finish there.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from syncsvc import generations, quoting, sqlfiles, statements
from syncsvc.catalog import find_generation, get_target
from syncsvc.database import AsyncConn
from syncsvc.errors import ValidationError
from syncsvc.models import Generation, GenerationState, Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Coverage:
    """How much of a target's source a generation holds."""

    rows: int
    """Source rows with text to embed."""
    current: int
    """Rows whose vector in the generation matches their current text."""
    queued: int
    """Rows without a current vector that are captured or queued (the worker will write them)."""
    orphans: int
    """Vectors whose source row no longer exists."""

    @property
    def missing(self) -> int:
        """Rows with no current vector and nothing queued to fix that."""
        return self.rows - self.current - self.queued

    @property
    def complete(self) -> bool:
        return self.missing == 0

    @property
    def fraction(self) -> float:
        return 1.0 if self.rows == 0 else self.current / self.rows


@dataclass(frozen=True)
class Promotion:
    target: str
    generation: Generation
    previous: Generation | None
    coverage: Coverage


async def coverage(conn: AsyncConn, target: Target, generation: Generation) -> Coverage:
    """Count current, queued and missing rows of ``generation`` in one pass over the source."""
    cur = await conn.execute(
        sql.SQL(
            """WITH src AS (
                   SELECT {s_json} AS pk, {input} AS input, {has_text} AS has_text,
                          v.content_hash
                   FROM {source} s LEFT JOIN {table} v ON {match} AND v.chunk = 0
               ), stale AS (
                   SELECT pk FROM src
                   WHERE has_text
                     AND content_hash IS DISTINCT FROM syncsvc.content_hash({key}, input)
               )
               SELECT (SELECT count(*) FROM src WHERE has_text) AS rows,
                      (SELECT count(*) FROM src WHERE has_text) - (SELECT count(*) FROM stale)
                          AS current,
                      (SELECT count(*) FROM stale x WHERE EXISTS
                          (SELECT 1 FROM syncsvc.queue q WHERE q.target_id = {tid}
                           AND q.pk = x.pk AND q.state <> 'failed')
                          OR EXISTS (SELECT 1 FROM syncsvc.inbox i WHERE i.target_id = {tid}
                           AND i.pks @> jsonb_build_array(x.pk))) AS queued,
                      (SELECT count(*) FROM {table} v WHERE v.chunk = 0 AND NOT EXISTS
                          (SELECT 1 FROM {source} s WHERE {match})) AS orphans"""
        ).format(
            s_json=statements.pk_json(target, "s"),
            input=statements.input_expr(target, "s"),
            has_text=statements.has_text(target, "s"),
            source=statements.source(target),
            table=statements.vector_table(generation),
            match=statements.pk_equals(target, "s", "v"),
            key=quoting.literal(generation.key),
            tid=quoting.literal(target.id),
        )
    )
    row = await cur.fetchone()
    assert row is not None
    return Coverage(
        rows=row["rows"], current=row["current"], queued=row["queued"], orphans=row["orphans"]
    )


async def promote_generation(
    conn: AsyncConn, target: Target, generation: Generation, *, force: bool = False
) -> Promotion:
    """Make ``generation`` the active one (call inside a transaction, with the target locked)."""
    if generation.state is GenerationState.ACTIVE:
        raise ValidationError(f"generation {generation.id} is already active")
    if generation.state is GenerationState.FAILED and not force:
        raise ValidationError(
            f"generation {generation.id} of {target.name} belongs to a failed job "
            "(see 'syncsvc jobs list'); resume the job, or promote with --force"
        )
    measured = await coverage(conn, target, generation)
    if not measured.complete and not force:
        raise ValidationError(
            f"generation {generation.id} of {target.name} is incomplete: "
            f"{measured.current}/{measured.rows} rows current, {measured.missing} missing "
            "(let its job finish, or promote with --force)"
        )
    previous = target.active
    # Retire first: at most one active generation per target (unique index).
    if previous is not None:
        await conn.execute(sqlfiles.query("jobs", "retire_generation"), {"id": previous.id})
    await conn.execute(sqlfiles.query("jobs", "activate_generation"), {"id": generation.id})
    await generations.replace_view(conn, target, generation)
    await conn.execute(
        sqlfiles.query("jobs", "complete_generation_jobs"), {"generation_id": generation.id}
    )
    logger.info(
        "target %s: generation %d (%s, %d dims) promoted%s",
        target.name,
        generation.id,
        generation.model,
        generation.dimensions,
        f", generation {previous.id} retired" if previous else "",
    )
    # As they are now: the promoted generation active, the previous one retired.
    return Promotion(
        target.name,
        dataclasses.replace(generation, state=GenerationState.ACTIVE),
        dataclasses.replace(previous, state=GenerationState.RETIRED) if previous else None,
        measured,
    )


async def lock_target(conn: AsyncConn, target_name: str) -> Target:
    """Lock a target's catalog row (inside a transaction) and load it fresh."""
    target = await get_target(conn, target_name)
    await conn.execute(sqlfiles.query("jobs", "lock_target"), {"id": target.id})
    return await get_target(conn, target_name)


async def promote(
    conn: AsyncConn, target_name: str, ref: str | int, *, force: bool = False
) -> Promotion:
    """Atomically switch ``target_name``'s search to generation ``ref`` (id or key)."""
    async with conn.transaction():
        target = await lock_target(conn, target_name)
        generation = find_generation(target, ref)
        return await promote_generation(conn, target, generation, force=force)


async def drop_generation(conn: AsyncConn, target_name: str, ref: str | int) -> Generation:
    """Delete a non-active generation and its vector table (and its jobs)."""
    async with conn.transaction():
        target = await lock_target(conn, target_name)
        generation = find_generation(target, ref)
        if generation.state is GenerationState.ACTIVE:
            raise ValidationError(
                f"generation {generation.id} is {target.name}'s active generation; promote "
                "another one first"
            )
        # Its jobs go with it (ON DELETE CASCADE): there is nothing left for them to build.
        await conn.execute(sqlfiles.query("jobs", "delete_generation"), {"id": generation.id})
        await generations.drop_generation_table(conn, generation)
    logger.info("target %s: generation %d dropped", target.name, generation.id)
    return generation


@dataclass(frozen=True)
class GenerationCoverage:
    """A generation and how much of its target's source it holds."""

    generation: Generation
    coverage: Coverage

    def as_dict(self) -> dict[str, Any]:
        g, c = self.generation, self.coverage
        return {
            "id": g.id,
            "state": g.state.value,
            "provider": g.provider,
            "model": g.model,
            "dimensions": g.dimensions,
            "table": f"syncsvc.{g.table_name}",
            "rows": c.rows,
            "current": c.current,
            "missing": c.missing,
        }


async def generation_coverage(conn: AsyncConn, target_name: str) -> list[GenerationCoverage]:
    """Every generation of a target with its coverage."""
    target = await get_target(conn, target_name)
    return [GenerationCoverage(g, await coverage(conn, target, g)) for g in target.generations]
