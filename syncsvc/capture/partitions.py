"""Capture of partitioned tables: the capture triggers on every partition, kept reconciled.

A statement trigger fires only for the table the statement names, so a write naming a
partition never reaches the parent's triggers: each partition (at any depth) carries the
target's capture triggers too. Partitions created, attached, detached or dropped later are
found by ``syncsvc.partition_changes()`` (catalog only, polled by the daemon every few
seconds): a new partition gets the triggers and is swept at once, a detached one loses them
and its vectors are removed at once. The DBA's DDL never waits long on syncsvc and never fails
because of it: each partition is changed in a transaction of its own under a short lock
timeout, and a partition that cannot be changed now is tried again at the next poll.

A WAL target (``capture = "wal"``) needs no trigger (its publication covers the whole tree),
but ATTACH, DETACH and DROP are not in the WAL: its recorded tree is reconciled the same way,
an attached partition swept and a detached or dropped one's vectors removed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.capture.sweep import remove_orphans, sweep_target
from syncsvc.core.models import Capture, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, quoting, sqlfiles, statements
from syncsvc.db.catalog import load_targets

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = "500ms"
"""How long syncsvc waits for a partition's lock: writers queue behind a waiting CREATE
TRIGGER, so it gives up soon (before the server's deadlock check, 1 s by default, could pick
the DBA's statement) and tries again at the next poll."""


RECONCILE_LOCK = 0x73797063
"""Session advisory lock (this key, target id) held by the daemon reconciling a target's
partitions: one daemon at a time, and others leave its status note alone meanwhile."""


@contextlib.asynccontextmanager
async def reconciling(conn: AsyncConn, target_id: int) -> AsyncIterator[bool]:
    """Whether this session reconciles ``target_id`` now (another daemon may be at it)."""
    lock = {"lock": RECONCILE_LOCK, "target_id": target_id}
    cur = await conn.execute(sqlfiles.query("catalog", "try_reconcile_lock"), lock)
    row = await cur.fetchone()
    mine = bool(row and row["mine"])
    try:
        yield mine
    finally:
        if mine:
            await conn.execute(sqlfiles.query("catalog", "reconcile_unlock"), lock)


async def clear_stale_notes(conn: AsyncConn, changing: list[int]) -> None:
    """Forget the note of a daemon that stopped before its sweep was done."""
    await conn.execute(
        sqlfiles.query("catalog", "clear_stale_drift"), {"ids": changing, "lock": RECONCILE_LOCK}
    )


@dataclass(frozen=True)
class Change:
    """One partition whose capture does not match the partition tree."""

    target_id: int
    target: str
    name: str
    change: str
    """added | detached | dropped | foreign (see ``syncsvc.partition_changes``)."""
    relation: sql.Composable | None
    """The partition, while it exists."""
    note: str
    """What status says about it (``syncsvc.describe_partition_change``)."""


def _relation(schema: str, name: str) -> sql.Composable:
    return quoting.ident(schema, name)


async def capture_partitions(conn: AsyncConn, target: Target) -> list[str]:
    """Install the capture triggers on every partition of the target's table; record the tree.

    Runs in the caller's transaction (``target add``, ``target repair``); returns the
    partitions captured."""
    cur = await conn.execute(sqlfiles.query("catalog", "partitions"), _where(target))
    rows = await cur.fetchall()
    for row in rows:
        # WAL capture: the publication covers every partition; only the tree is recorded.
        if row["capturable"] and target.capture is Capture.TRIGGERS:
            for statement in statements.create_triggers(
                target, _relation(row["schema"], row["name"])
            ):
                await conn.execute(statement)
    await _record_tree(conn, target, {str(r["relid"]): r["qualified"] for r in rows})
    return [r["qualified"] for r in rows if r["capturable"]]


async def release_partitions(conn: AsyncConn, target: Target) -> None:
    """Drop the target's capture triggers from every other table carrying them (its
    partitions, attached or not), in the caller's transaction."""
    cur = await conn.execute(
        sqlfiles.query("catalog", "captured_relations"),
        {
            "trigger": f"syncsvc_{target.id}_ins",
            "schema": target.source_schema,
            "table": target.source_table,
        },
    )
    for row in await cur.fetchall():
        for statement in statements.drop_relation_triggers(
            target, _relation(row["schema"], row["name"])
        ):
            await conn.execute(statement)


async def pending_changes(conn: AsyncConn) -> list[Change]:
    """Every partition of every target whose capture does not match the tree (cheap)."""
    cur = await conn.execute(sqlfiles.query("catalog", "partition_changes"))
    return [
        Change(
            target_id=row["target_id"],
            target=row["target"],
            name=row["name"],
            change=row["change"],
            note=row["note"],
            relation=(_relation(row["rel_schema"], row["rel_name"]) if row["rel_name"] else None),
        )
        for row in await cur.fetchall()
    ]


async def apply(conn: AsyncConn, target: Target, changes: list[Change]) -> list[str]:
    """Bring the capture of ``target`` in line with its partition tree; returns why changes
    could not be made now (tried again at the next poll). ``conn`` is in autocommit: each
    partition is changed in a short transaction of its own."""
    failed: list[str] = []
    for change in changes:
        if change.relation is None or change.change == "foreign":
            continue
        if target.capture is Capture.WAL:
            continue  # nothing per partition: the recorded tree is updated below
        if change.change == "added":
            work = statements.create_triggers(target, change.relation)
        else:
            work = statements.drop_relation_triggers(target, change.relation)
        try:
            async with conn.transaction():
                await common.set_lock_timeout(conn, LOCK_TIMEOUT)
                for statement in work:
                    await conn.execute(statement)
        except psycopg.errors.DuplicateObject:
            pass  # another daemon captured it first
        except psycopg.Error as exc:
            reason = (
                f"cannot change the capture of partition {change.name} yet: "
                f"{(exc.diag.message_primary or str(exc)).strip()}; retrying"
            )
            logger.warning("target %s: %s", target.name, reason)
            failed.append(reason)
    if not failed:
        cur = await conn.execute(sqlfiles.query("catalog", "partitions"), _where(target))
        tree = {str(r["relid"]): r["qualified"] for r in await cur.fetchall()}
        await _record_tree(conn, target, tree)
    return failed


async def _record_tree(conn: AsyncConn, target: Target, tree: dict[str, str]) -> None:
    await conn.execute(
        sqlfiles.query("catalog", "set_partitions"), {"id": target.id, "tree": Jsonb(tree)}
    )


def _where(target: Target) -> dict[str, str]:
    return {"schema": target.source_schema, "table": target.source_table}


async def drift_notes(conn: AsyncConn) -> dict[str, str]:
    """Per target, why its vectors and its source disagree right now in a way the daemon is
    fixing (``syncsvc.capture_drift``: the same words in status, the admin page, metrics)."""
    cur = await conn.execute(sqlfiles.query("catalog", "capture_drift"))
    return {row["target"]: row["drift"] for row in await cur.fetchall()}


async def reconcile(
    conn: AsyncConn, *, chunk_rows: int, on_chunk: Callable[[], None] | None = None
) -> int:
    """Bring every target's capture in line with its partition tree; returns the partitions
    changed. Status says what is being fixed (``targets.capture_drift``) until its sweep is
    done. ``on_chunk`` is called when rows were enqueued (wake the claimer)."""
    changes = await pending_changes(conn)
    changing = sorted({c.target_id for c in changes})
    await clear_stale_notes(conn, changing)
    if not changes:
        return 0
    tracked = {t.id: t for t in await load_targets(conn)}
    for target_id in changing:
        target = tracked.get(target_id)
        if target is None:
            continue
        async with reconciling(conn, target_id) as mine:
            if not mine:
                continue  # another daemon is at it
            # Read again under the lock: another daemon may have just finished.
            group = [c for c in await pending_changes(conn) if c.target_id == target_id]
            if group:
                await _reconcile_target(conn, target, group, chunk_rows, on_chunk)
    return len(changes)


async def _reconcile_target(
    conn: AsyncConn,
    target: Target,
    group: list[Change],
    chunk_rows: int,
    on_chunk: Callable[[], None] | None,
) -> None:
    note = "; ".join(c.note for c in group)
    logger.info("target %s: %s", target.name, note)
    params = {"id": target.id, "drift": note}
    await conn.execute(sqlfiles.query("catalog", "set_capture_drift"), params)
    failed = await apply(conn, target, group)
    if failed:
        # Said in status until it works (tried again at the next poll).
        params["drift"] = "; ".join(failed)
        await conn.execute(sqlfiles.query("catalog", "set_capture_drift"), params)
        return
    if target.paused_reason is None:
        # Triggers first, then the sweep: a write before the triggers is found by the sweep,
        # a write after them by the triggers.
        for change in group:
            if change.change in ("added", "foreign") and change.relation is not None:
                await sweep_target(
                    conn, target, chunk_rows=chunk_rows, on_chunk=on_chunk, source=change.relation
                )
        if any(c.change in ("detached", "dropped") for c in group):
            await remove_orphans(conn, target)
    await conn.execute(sqlfiles.query("catalog", "clear_capture_drift"), params)
