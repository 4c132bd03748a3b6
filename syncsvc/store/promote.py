"""Switching a target's search to another generation, measuring coverage, dropping old ones.

Promotion happens in one transaction: the generations' states and the target's view change
together, so a search sees either the old space or the new one, never a mix. The view's
``DROP`` waits for searches already reading the old generation, which therefore finish there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from syncsvc.core.errors import ValidationError
from syncsvc.core.models import Generation, GenerationState, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting, sqlfiles, statements
from syncsvc.db.catalog import find_generation, get_target
from syncsvc.store import generations

logger = logging.getLogger(__name__)


LIVE_EDIT_GRACE_SECONDS = 30
"""A row whose vector is only missing because of a live edit captured this recently counts as
done for promotion: the worker writes every live generation, so that edit reaches the promoted
generation as it reaches the active one."""
LIVE_EDIT_ALLOWANCE = 100
"""At most this many such rows: beyond it they are missing (a backlog, not a moment's lag)."""
FAILED_KEYS_SHOWN = 5


@dataclass(frozen=True)
class Coverage:
    """How much of a target's source a generation holds."""

    rows: int
    """Source rows with text to embed."""
    current: int
    """Rows whose vector in the generation matches their current text."""
    queued: int
    """Rows without a current vector whose change is a live edit captured in the last
    ``LIVE_EDIT_GRACE_SECONDS`` (rows a job still has to embed never count here)."""
    orphans: int
    """Vectors whose source row no longer exists."""
    failed: int = 0
    """Rows without a current vector whose queue entry failed for good (see ``failed list``)."""
    failed_keys: tuple[Any, ...] = ()
    """The keys of the first ``FAILED_KEYS_SHOWN`` failed rows."""

    @property
    def allowed(self) -> int:
        """Recent live edits counted as done (none once there are more than the allowance)."""
        return self.queued if self.queued <= LIVE_EDIT_ALLOWANCE else 0

    @property
    def missing(self) -> int:
        """Rows with no current vector that are neither failed nor a moment-old live edit."""
        return self.rows - self.current - self.failed - self.allowed

    @property
    def complete(self) -> bool:
        """Every row is current or a moment-old live edit; failed rows aside."""
        return self.missing == 0

    @property
    def fraction(self) -> float:
        return 1.0 if self.rows == 0 else self.current / self.rows

    def describe(self) -> str:
        """What is missing, in words (for refusals and the admin page)."""
        parts = [f"{self.current}/{self.rows} rows current"]
        if self.missing:
            parts.append(f"{self.missing} missing")
        if self.failed:
            keys = ", ".join(json.dumps(k) for k in self.failed_keys)
            more = ", ..." if self.failed > len(self.failed_keys) else ""
            parts.append(f"{self.failed} failed (keys {keys}{more})")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "current": self.current,
            "missing": self.missing,
            "failed": self.failed,
            "failed_keys": list(self.failed_keys),
            "recent_live_edits": self.queued,
            "orphans": self.orphans,
            "complete": self.complete,
        }


@dataclass(frozen=True)
class Promotion:
    target: str
    generation: Generation
    previous: Generation | None
    coverage: Coverage
    dry_run: bool = False
    """Nothing was switched: this is what a promotion would do."""


async def coverage(conn: AsyncConn, target: Target, generation: Generation) -> Coverage:
    """Count current, recently edited, failed and missing rows of ``generation`` in one pass."""
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
               ), flags AS (
                   SELECT x.pk,
                          EXISTS (SELECT 1 FROM syncsvc.queue q WHERE q.target_id = {tid}
                                  AND q.pk = x.pk AND q.state = 'failed') AS failed,
                          EXISTS (SELECT 1 FROM syncsvc.queue q WHERE q.target_id = {tid}
                                  AND q.pk = x.pk AND q.state <> 'failed' AND q.priority = 0
                                  AND q.enqueued_at > now() - {grace})
                          OR EXISTS (SELECT 1 FROM syncsvc.inbox i WHERE i.target_id = {tid}
                                  AND i.pks @> jsonb_build_array(x.pk)
                                  AND i.created_at > now() - {grace}) AS recent
                   FROM stale x
               )
               SELECT (SELECT count(*) FROM src WHERE has_text) AS rows,
                      (SELECT count(*) FROM src WHERE has_text) - (SELECT count(*) FROM stale)
                          AS current,
                      (SELECT count(*) FROM flags WHERE recent AND NOT failed) AS queued,
                      (SELECT count(*) FROM flags WHERE failed) AS failed,
                      (SELECT coalesce(jsonb_agg(f.pk), '[]') FROM
                          (SELECT pk FROM flags WHERE failed LIMIT {shown}) f) AS failed_keys,
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
            grace=quoting.literal(f"{LIVE_EDIT_GRACE_SECONDS} seconds") + sql.SQL("::interval"),
            shown=quoting.literal(FAILED_KEYS_SHOWN),
        )
    )
    row = await cur.fetchone()
    assert row is not None
    return Coverage(
        rows=row["rows"],
        current=row["current"],
        queued=row["queued"],
        orphans=row["orphans"],
        failed=row["failed"],
        failed_keys=tuple(row["failed_keys"]),
    )


def refusal(
    target: Target,
    generation: Generation,
    measured: Coverage,
    *,
    force: bool = False,
    accept_failed: bool = False,
    max_failed: int = 0,
) -> str | None:
    """Why ``generation`` may not be promoted now, or None: the one check behind the CLI, SQL,
    Python, ``--auto-promote`` and the admin page."""
    g = f"generation {generation.id} of {target.name}"
    if generation.state is GenerationState.ACTIVE:
        return f"generation {generation.id} is already active"
    if force:
        return None
    if generation.state is GenerationState.FAILED:
        return (
            f"{g} belongs to a failed job (see 'syncsvc jobs list'); resume the job, or "
            "promote with --force"
        )
    if generation.state is GenerationState.CANCELLED:
        return (
            f"{g} belongs to a cancelled job; re-embed to finish it ('syncsvc reembed "
            f"{target.name} --model {generation.model} --dimensions {generation.dimensions}'), "
            "or promote with --force"
        )
    if generation.state is GenerationState.RETIRED:
        return (
            f"{g} is retired and received no edits since; re-embed to bring it up to date "
            f"('syncsvc reembed {target.name} --model {generation.model} --dimensions "
            f"{generation.dimensions}'), or promote with --force"
        )
    if not measured.complete:
        return (
            f"{g} is incomplete: {measured.describe()} (let its job finish, or promote with "
            "--force)"
        )
    if measured.failed and not accept_failed and measured.failed > max_failed:
        return (
            f"{g} has {measured.describe()}: see 'syncsvc failed list {target.name}'; promote "
            "with --accept-failed to search without them (or set jobs.promote_max_failed)"
        )
    return None


async def promote_generation(
    conn: AsyncConn,
    target: Target,
    generation: Generation,
    *,
    force: bool = False,
    accept_failed: bool = False,
    max_failed: int = 0,
    dry_run: bool = False,
) -> Promotion:
    """Make ``generation`` the active one (call inside a transaction, with the target locked)."""
    measured = await coverage(conn, target, generation)
    refused = refusal(
        target,
        generation,
        measured,
        force=force,
        accept_failed=accept_failed,
        max_failed=max_failed,
    )
    if refused is not None:
        raise ValidationError(refused)
    previous = target.active
    if dry_run:
        return Promotion(target.name, generation, previous, measured, dry_run=True)
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
    conn: AsyncConn,
    target_name: str,
    ref: str | int,
    *,
    force: bool = False,
    accept_failed: bool = False,
    max_failed: int = 0,
    dry_run: bool = False,
) -> Promotion:
    """Atomically switch ``target_name``'s search to generation ``ref`` (id or key); with
    ``dry_run``, check and measure only."""
    async with conn.transaction():
        target = await lock_target(conn, target_name)
        generation = find_generation(target, ref)
        return await promote_generation(
            conn,
            target,
            generation,
            force=force,
            accept_failed=accept_failed,
            max_failed=max_failed,
            dry_run=dry_run,
        )


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
        await conn.execute(
            sqlfiles.query("jobs", "forget_generation_failures"), {"id": generation.id}
        )
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
            "failed": c.failed,
        }


async def generation_coverage(conn: AsyncConn, target_name: str) -> list[GenerationCoverage]:
    """Every generation of a target with its coverage."""
    target = await get_target(conn, target_name)
    return [GenerationCoverage(g, await coverage(conn, target, g)) for g in target.generations]
