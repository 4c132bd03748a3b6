"""The publication and the logical replication slot of WAL capture (``capture = "wal"``).

syncsvc owns one publication (``syncsvc``, ``publish_via_partition_root``: a partition's
changes arrive as its partitioned table's) and one pgoutput slot per database
(``syncsvc_<database oid>``). The slot keeps WAL on the server until syncsvc has stored the
changes, so its retained bytes are reported (status, metrics), and a slot that is dropped or
invalidated pauses the WAL targets until a new slot exists and a recovery sweep has run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from syncsvc.capture.sweep import sweep_target
from syncsvc.core.errors import SyncsvcError, ValidationError
from syncsvc.core.models import Capture, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, quoting, sqlfiles, statements
from syncsvc.db.catalog import load_targets

logger = logging.getLogger(__name__)

PUBLICATION = "syncsvc"
IDENTITY_PAUSE = "taken out of the WAL publication: "
"""How the reason starts when a table lost its replica identity (``guard_publication``)."""


def _q(name: str) -> sql.SQL:
    return sqlfiles.query("wal", name)


async def slot_name(conn: AsyncConn) -> str:
    cur = await conn.execute(_q("slot_name"))
    row = await cur.fetchone()
    assert row is not None
    return str(row["slot"])


async def problems(conn: AsyncConn) -> tuple[list[str], list[str]]:
    """What the server or the role lacks for WAL capture (refused), and what is unsafe
    (warned); each a short clause naming the setting and the fix."""
    cur = await conn.execute(_q("prerequisites"), {"slot": await slot_name(conn)})
    row = await cur.fetchone()
    assert row is not None
    missing: list[str] = []
    unsafe: list[str] = []
    if row["wal_level"] != "logical":
        missing.append(
            f"wal_level is {row['wal_level']}, needs logical (ALTER SYSTEM SET wal_level = "
            "logical, then restart PostgreSQL)"
        )
    if not row["has_slot"] and row["slots_used"] >= row["max_slots"]:
        missing.append(
            f"max_replication_slots is {row['max_slots']} with {row['slots_used']} in use, "
            "needs one free (raise it, then restart PostgreSQL)"
        )
    if not row["replication"]:
        missing.append(
            f"role {row['role']} lacks REPLICATION (ALTER ROLE {row['role']} REPLICATION)"
        )
    if row["encoding"] != "UTF8":
        # pgoutput sends text in the database's encoding; the reader decodes UTF-8.
        missing.append(
            f"the database's encoding is {row['encoding']}, WAL capture reads UTF8 only "
            "(use capture = triggers)"
        )
    if row["keep_size"] in ("-1", "-1MB"):
        unsafe.append(
            "max_slot_wal_keep_size is -1: a stopped daemon's slot keeps WAL without limit "
            "(set e.g. ALTER SYSTEM SET max_slot_wal_keep_size = '10GB')"
        )
    return missing, unsafe


async def check(conn: AsyncConn) -> list[str]:
    """Refuse (one line saying everything missing) unless WAL capture can work; returns the
    warnings."""
    missing, unsafe = await problems(conn)
    if missing:
        raise ValidationError("capture = wal needs: " + "; ".join(missing))
    for warning in unsafe:
        logger.warning("capture = wal: %s", warning)
    return unsafe


async def check_existing(conn: AsyncConn) -> str | None:
    """At ``migrate``: while WAL targets exist, what the server or role lacks for them, in one
    line (logged, not raised: the upgrade itself does not depend on it)."""
    wal = wal_targets(await load_targets(conn))
    if not wal:
        return None
    missing, unsafe = await problems(conn)
    if not missing and not unsafe:
        return None
    names = ", ".join(t.name for t in wal)
    line = f"WAL targets {names}: " + "; ".join(missing + unsafe)
    if missing:
        logger.error("%s", line)
    else:
        logger.warning("%s", line)
    return line


async def check_identity(conn: AsyncConn, oid: str, pk: tuple[str, ...]) -> None:
    """A DELETE's WAL record carries the replica identity only: it must hold the target's key
    (and without one, PostgreSQL would refuse the application's UPDATEs once published)."""
    cur = await conn.execute(_q("replica_identity"), {"oid": oid})
    row = await cur.fetchone()
    assert row is not None
    if row["persistence"] == "u":
        raise ValidationError(
            f"{oid} is UNLOGGED: its writes are not in the WAL; use capture = triggers"
        )
    if row["identity"] == "f":
        return
    if sorted(row["key_columns"] or []) != sorted(pk):
        raise ValidationError(
            f"capture = wal needs {oid}'s replica identity to be the key "
            f"({', '.join(pk)}): give it a primary key on it, or ALTER TABLE {oid} "
            "REPLICA IDENTITY USING INDEX <unique index on the key>"
        )


async def identity_lost(conn: AsyncConn, tables: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Of ``tables`` (schema, name), those on which PostgreSQL refuses UPDATE and DELETE once
    published: the table or one of its partitions has no usable replica identity."""
    wanted = sorted(set(tables))
    if not wanted:
        return set()
    cur = await conn.execute(
        _q("identity_lost"),
        {"schemas": [t[0] for t in wanted], "tables": [t[1] for t in wanted]},
    )
    return {(r["schema"], r["table"]) for r in await cur.fetchall()}


async def ensure_publication(conn: AsyncConn) -> None:
    """The publication, created if missing. It must exist before the slot: pgoutput looks it
    up as of each change it decodes, and fails on changes older than the publication."""
    cur = await conn.execute(_q("has_publication"))
    row = await cur.fetchone()
    if row is None or not row["present"]:
        await conn.execute(_q("create_publication"))


async def publish(conn: AsyncConn, target: Target) -> None:
    """Put the target's table in the publication (in the caller's transaction)."""
    await ensure_publication(conn)
    where = {"schema": target.source_schema, "table": target.source_table}
    cur = await conn.execute(_q("published"), where)
    row = await cur.fetchone()
    if row is None or not row["present"]:
        await conn.execute(
            sql.SQL("ALTER PUBLICATION {} ADD TABLE {}").format(
                quoting.ident(PUBLICATION), statements.source(target)
            )
        )


async def unpublish(conn: AsyncConn, target: Target) -> bool:
    """Take the target's table out of the publication unless another WAL target reads it;
    returns whether no WAL target is left (drop the slot after commit: ``drop_slot``)."""
    cur = await conn.execute(
        _q("wal_targets"),
        {"schema": target.source_schema, "table": target.source_table, "id": target.id},
    )
    row = await cur.fetchone()
    assert row is not None
    if row["total"] == 0:
        await conn.execute(_q("drop_publication"))
        return True
    cur = await conn.execute(
        _q("published"), {"schema": target.source_schema, "table": target.source_table}
    )
    published = await cur.fetchone()
    if row["on_table"] == 0 and published is not None and published["present"]:
        await conn.execute(
            sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                quoting.ident(PUBLICATION), statements.source(target)
            )
        )
    return False


def outside_transaction(conn: AsyncConn) -> bool:
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


async def create_slot(conn: AsyncConn) -> bool:
    """Create the slot if missing (``conn`` must not be in a transaction: PostgreSQL refuses a
    slot in one that wrote, and waits for the others to end); returns whether it created it."""
    slot = await slot_name(conn)
    if await slot_state(conn, slot) is not None:
        return False
    await ensure_publication(conn)
    try:
        await conn.execute(_q("create_slot"), {"slot": slot})
    except psycopg.errors.DuplicateObject:
        return False  # another daemon or command was first
    logger.info("created logical replication slot %s", slot)
    return True


async def drop_slot(conn: AsyncConn, attempts: int = 50) -> None:
    """Drop the slot (no WAL target left). A daemon reading it holds it for one call only:
    retry briefly while it is active."""
    slot = await slot_name(conn)
    for attempt in range(attempts):
        try:
            await conn.execute(_q("drop_slot"), {"slot": slot})
            logger.info("dropped logical replication slot %s", slot)
            return
        except psycopg.errors.UndefinedObject:
            return
        except psycopg.errors.ObjectInUse:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)


async def drop_capture(conn: AsyncConn) -> None:
    """No WAL target left: the slot and the publication go (``conn`` in autocommit)."""
    await drop_slot(conn)
    await conn.execute(_q("drop_publication"))


@dataclass(frozen=True)
class SlotState:
    slot: str
    wal_status: str | None
    invalidation_reason: str | None
    retained_bytes: int | None
    lag_bytes: int | None

    @property
    def lost(self) -> bool:
        return self.wal_status == "lost" or self.invalidation_reason is not None


async def slot_state(conn: AsyncConn, slot: str | None = None) -> SlotState | None:
    """The slot's state; None when it does not exist."""
    slot = slot or await slot_name(conn)
    cur = await conn.execute(_q("slot"), {"slot": slot})
    row = await cur.fetchone()
    if row is None:
        return None
    return SlotState(
        slot,
        row["wal_status"],
        row["invalidation_reason"],
        row["retained_bytes"],
        row["lag_bytes"],
    )


def wal_targets(tracked: list[Target]) -> list[Target]:
    return [t for t in tracked if t.capture is Capture.WAL]


async def pause_if_lost(
    conn: AsyncConn, tracked: list[Target] | None = None, slot: str | None = None
) -> str | None:
    """Pause every WAL target when the slot is missing or invalidated: changes since were not
    read. Returns the reason (None: the slot is fine, or no WAL target). ``tracked`` and
    ``slot``: the targets and the slot's name when the caller has read them already."""
    wal = wal_targets(tracked if tracked is not None else await load_targets(conn))
    if not wal:
        return None
    slot = slot or await slot_name(conn)
    state = await slot_state(conn, slot)
    if state is not None and not state.lost:
        return None
    if state is None:
        what = f"replication slot {slot} does not exist (dropped, or not created yet)"
    else:
        why = state.invalidation_reason or f"wal_status {state.wal_status}"
        what = f"replication slot {slot} was invalidated ({why})"
    reason = f"{what}: changes since were not read; a recovery sweep runs once a new slot exists"
    for target in wal:
        await conn.execute(
            sqlfiles.query("catalog", "pause_target"), {"id": target.id, "reason": reason}
        )
        if target.paused_reason != reason:
            logger.error("pausing target %s: %s", target.name, reason)
    return reason


async def recover(conn: AsyncConn, reason: str, *, chunk_rows: int = 5000) -> int:
    """Replace a lost slot, then sweep every WAL target (changes made before the new slot are
    found by the sweep, those after it by the slot) and resume the ones paused for ``reason``.
    ``conn`` is in autocommit. Returns the rows queued."""
    state = await slot_state(conn)
    if state is not None and state.lost:
        await drop_slot(conn)
    await create_slot(conn)
    enqueued = 0
    # Read after the slot exists: a removal of the last WAL target that committed before this
    # found no slot to drop, so the new one (and the publication) go here instead of holding
    # WAL with nobody reading it.
    wal = wal_targets(await load_targets(conn))
    if not wal:
        await drop_capture(conn)
        return 0
    for target in wal:
        result = await sweep_target(conn, target, chunk_rows=chunk_rows)
        enqueued += result.enqueued
    await conn.execute(_q("resume_recovered"), {"ids": [t.id for t in wal], "reason": reason})
    await common.notify(conn, statements.QUEUE_CHANNEL, "wal")
    logger.info("WAL capture recovered: new slot, %d rows queued by the sweep", enqueued)
    return enqueued


async def guard_publication(
    conn: AsyncConn, tracked: list[Target] | None = None, *, chunk_rows: int = 5000
) -> list[str]:
    """Keep the publication from harming the application. PostgreSQL refuses UPDATE and DELETE
    on a published table without a replica identity, so a table whose key the DBA dropped
    leaves the publication at once and its WAL targets pause; once the key is back, the table
    is published again, swept (changes in between were not in the WAL stream) and resumed.
    ``conn`` is in autocommit. Returns the names of the targets paused now."""
    wal = wal_targets(tracked if tracked is not None else await load_targets(conn))
    if not wal:
        return []
    lost = await identity_lost(conn, ((t.source_schema, t.source_table) for t in wal))
    paused: list[str] = []
    for target in wal:
        where = (target.source_schema, target.source_table)
        try:
            if where in lost:
                if await _unpublish_lost(conn, target):
                    paused.append(target.name)
            elif await _republish(conn, target, chunk_rows=chunk_rows):
                paused.append(target.name)
        except psycopg.errors.LockNotAvailable:
            continue  # the DBA's DDL holds the table: the next look does it
        except (psycopg.Error, SyncsvcError) as exc:
            if conn.broken:
                raise
            # One target's trouble (say its sweep failed) must not stop the slot being read
            # for the others: it stays paused, and the next look tries again.
            message = f"target {target.name}: back into WAL capture failed: {exc}"
            if _reported.get(target.id) != message:
                _reported[target.id] = message
                logger.warning("%s (retrying every second)", message)
    return paused


_reported: dict[int, str] = {}
"""The last guard failure logged per target: a failure repeated every second is logged once."""


async def _unpublish_lost(conn: AsyncConn, target: Target) -> bool:
    async with conn.transaction():
        await common.set_lock_timeout(conn, "500ms")
        published = await conn.execute(
            _q("published"), {"schema": target.source_schema, "table": target.source_table}
        )
        row = await published.fetchone()
        if row is not None and row["present"]:
            await conn.execute(
                sql.SQL("ALTER PUBLICATION {} DROP TABLE {}").format(
                    quoting.ident(PUBLICATION), statements.source(target)
                )
            )
        return await _pause_for_identity(conn, target)


async def _pause_for_identity(conn: AsyncConn, target: Target) -> bool:
    """Pause a running target whose table is out of the publication for want of a key (a
    target paused for another reason keeps that reason: its resume comes back here)."""
    if target.paused_reason is not None:
        return False
    name = f"{target.source_schema}.{target.source_table}"
    reason = (
        f"{IDENTITY_PAUSE}{name} has no replica identity any more (its primary key was "
        "dropped?), and PostgreSQL refuses UPDATE and DELETE on such a published table; "
        "give it back its key and the target resumes by itself"
    )
    cur = await conn.execute(_q("pause_for_identity"), {"id": target.id, "reason": reason})
    if cur.rowcount > 0:
        logger.error("pausing target %s: %s", target.name, reason)
        return True
    return False


async def _republish(conn: AsyncConn, target: Target, *, chunk_rows: int) -> bool:
    """Once a WAL target's table (every partition of it) has its key: publish it again if it
    is out, and sweep and resume the target if the guard paused it. Another target on the same
    table, or a sweep that failed last time, finds the table published and its target still
    paused: it is swept and resumed then. True when it paused instead."""
    where = {"schema": target.source_schema, "table": target.source_table}
    cur = await conn.execute(_q("published"), where)
    row = await cur.fetchone()
    published = row is not None and bool(row["present"])
    held_back = (target.paused_reason or "").startswith(IDENTITY_PAUSE)
    if published and not held_back:
        return False
    oid = await common.relation_oid(conn, target.source_schema, target.source_table)
    if oid is None:
        return False  # gone: drift reports it
    if not published:
        try:
            await check_identity(conn, str(oid), target.pk_columns)
        except ValidationError:
            # Still without its key: a target resumed meanwhile must not run uncaptured.
            return await _pause_for_identity(conn, target)
        async with conn.transaction():
            await common.set_lock_timeout(conn, "500ms")
            held = await conn.execute(_q("wal_target_held"), {"id": target.id})
            if await held.fetchone() is None:
                return False  # removed meanwhile
            await publish(conn, target)
    # Changes made while the table was out of the publication are found by the sweep; those
    # after it by the slot. The target resumes only after its sweep: a failed sweep leaves it
    # paused, and the next look sweeps again.
    result = await sweep_target(conn, target, chunk_rows=chunk_rows)
    await conn.execute(_q("resume_identity"), {"id": target.id, "prefix": IDENTITY_PAUSE})
    await common.notify(conn, statements.QUEUE_CHANNEL, "wal")
    logger.info(
        "target %s: %s.%s is in the WAL publication again, %d rows queued by its sweep",
        target.name,
        target.source_schema,
        target.source_table,
        result.enqueued,
    )
    return False
