"""Capture of partitioned tables: the capture triggers on every partition, kept reconciled.

A statement trigger fires only for the table the statement names, so a write naming a
partition never reaches the parent's triggers: each partition (at any depth) carries the
target's capture triggers too. Partitions created, attached, detached or dropped later are
found by ``syncsvc.partition_changes()`` (catalog only, polled by the daemon every few
seconds): a new partition gets the triggers and is swept at once, a detached one loses them
and its vectors are removed at once. The DBA's DDL never waits long on syncsvc and never fails
because of it: each partition is changed in a transaction of its own under a short lock
timeout, and a partition that cannot be changed now is tried again at the next poll.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc import sqlfiles, statements
from syncsvc.database import AsyncConn
from syncsvc.models import Target

logger = logging.getLogger(__name__)

LOCK_TIMEOUT = "500ms"
"""How long syncsvc waits for a partition's lock: writers queue behind a waiting CREATE
TRIGGER, so it gives up soon (before the server's deadlock check, 1 s by default, could pick
the DBA's statement) and tries again at the next poll."""


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

    def describe(self) -> str:
        if self.change == "added":
            return f"partition {self.name} attached; sweeping"
        if self.change == "foreign":
            return (
                f"partition {self.name} is a foreign table: writes naming it are found by the "
                "periodic sweep only"
            )
        return f"partition {self.name} {self.change}; removing its vectors"


def _relation(schema: str, name: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(name))


async def capture_partitions(conn: AsyncConn, target: Target) -> list[str]:
    """Install the capture triggers on every partition of the target's table; record the tree.

    Runs in the caller's transaction (``target add``, ``target repair``); returns the
    partitions captured."""
    cur = await conn.execute(sqlfiles.query("catalog", "partitions"), _where(target))
    rows = await cur.fetchall()
    for row in rows:
        if row["capturable"]:
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
        if change.change == "added":
            work = statements.create_triggers(target, change.relation)
        else:
            work = statements.drop_relation_triggers(target, change.relation)
        try:
            async with conn.transaction():
                await conn.execute("SELECT set_config('lock_timeout', %s, true)", (LOCK_TIMEOUT,))
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
