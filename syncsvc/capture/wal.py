"""Reading the slot: decoded changes of WAL targets become inbox rows, as the triggers' do.

One read peeks at whole committed transactions (``pg_logical_slot_peek_binary_changes``,
pgoutput), writes the keys they touched into ``syncsvc.inbox`` (priority, content-hash
skipping and the no-op rule are the queue's and the worker's, as for triggers) and commits;
only then is the slot advanced. A daemon killed, or a server restarted, between the two reads
the same changes again: their keys are queued twice, which costs nothing, and none is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.capture import pgoutput
from syncsvc.capture.sweep import remove_orphans
from syncsvc.core.models import Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, quoting, sqlfiles, statements

logger = logging.getLogger(__name__)

READER_LOCK = 0x7377616C  # "swal": one daemon at a time reads the slot
KEYS_PER_INBOX_ROW = 10_000
FETCH_ROWS = 5_000


def _q(name: str) -> sql.SQL:
    return sqlfiles.query("wal", name)


@dataclass
class _Bound:
    """A target and where its columns are in one relation's rows."""

    target: Target
    key: list[int]
    embedded: list[int]


@dataclass
class Changes:
    """What one read found, per target id."""

    keys: dict[int, dict[tuple[object, ...], None]] = field(default_factory=dict)
    truncated: set[int] = field(default_factory=set)
    end_lsn: int | None = None
    """The end of the last whole transaction read."""
    messages: int = 0
    skipped_updates: int = 0
    """UPDATEs the WAL showed to leave every embedded column unchanged (never queued)."""


class Decoder:
    """Turns pgoutput messages into the keys each WAL target must re-read."""

    def __init__(self, targets: Sequence[Target]) -> None:
        self.by_table: dict[tuple[str, str], list[Target]] = {}
        for target in targets:
            table = (target.source_schema, target.source_table)
            self.by_table.setdefault(table, []).append(target)
        self.relations: dict[int, list[_Bound]] = {}

    def feed(self, data: bytes, changes: Changes) -> None:
        message = pgoutput.decode(data)
        changes.messages += 1
        if isinstance(message, pgoutput.Relation):
            self._relation(message)
        elif isinstance(message, pgoutput.Commit):
            changes.end_lsn = message.end_lsn
        elif isinstance(message, pgoutput.Insert):
            for bound in self.relations.get(message.relid, ()):
                self._add(changes, bound, message.new)
        elif isinstance(message, pgoutput.Update):
            for bound in self.relations.get(message.relid, ()):
                self._update(changes, bound, message)
        elif isinstance(message, pgoutput.Delete):
            for bound in self.relations.get(message.relid, ()):
                self._add(changes, bound, message.old)
        elif isinstance(message, pgoutput.Truncate):
            for relid in message.relids:
                for bound in self.relations.get(relid, ()):
                    changes.truncated.add(bound.target.id)

    def _relation(self, relation: pgoutput.Relation) -> None:
        bound = []
        for target in self.by_table.get((relation.schema, relation.name), ()):
            try:
                key = [relation.columns.index(c) for c in target.pk_columns]
                embedded = [relation.columns.index(c) for c in target.columns]
            except ValueError:
                # The table changed shape: the drift check pauses the target with the cause.
                logger.warning("target %s: its columns are not all in the WAL", target.name)
                continue
            bound.append(_Bound(target, key, embedded))
        self.relations[relation.relid] = bound

    @staticmethod
    def _add(changes: Changes, bound: _Bound, row: tuple[pgoutput.Value, ...]) -> None:
        key = tuple(row[i] for i in bound.key)
        if any(v is None or v is pgoutput.UNCHANGED for v in key):
            return
        changes.keys.setdefault(bound.target.id, {})[key] = None

    def _update(self, changes: Changes, bound: _Bound, update: pgoutput.Update) -> None:
        new, old = update.new, update.old
        key_changed = old is not None and any(old[i] != new[i] for i in bound.key)
        if not key_changed:
            values = [new[i] for i in bound.embedded]
            # An unchanged TOASTed column is not sent: the embedded text did not change. With
            # REPLICA IDENTITY FULL the old row is here too, so any no-op edit is known here;
            # otherwise the worker's content hash skips it (no API call either way).
            pairs = zip(bound.embedded, values, strict=True)
            unchanged = all(v is pgoutput.UNCHANGED for v in values) or (
                old is not None
                and not update.old_is_key
                and all(v is pgoutput.UNCHANGED or v == old[i] for i, v in pairs)
            )
            if unchanged:
                changes.skipped_updates += 1
                return
        if key_changed and old is not None:
            self._add(changes, bound, old)
        self._add(changes, bound, new)


def _insert_keys(target: Target) -> sql.Composed:
    """One inbox row of a target's keys, typed as the sweep and the triggers write them."""
    return sql.SQL(
        "INSERT INTO syncsvc.inbox (target_id, pks) "
        "SELECT {tid}, jsonb_agg(jsonb_build_array({typed})) "
        "FROM jsonb_array_elements(%(keys)s::jsonb) AS k(pk) HAVING count(*) > 0"
    ).format(
        tid=quoting.literal(target.id),
        typed=statements.pk_from_json(target, sql.SQL("k.pk")),
    )


@dataclass(frozen=True)
class ReadResult:
    messages: int
    queued: int
    """Keys written to the inbox."""
    full: bool
    """The read stopped at its change limit: more is waiting."""


async def read_once(
    conn: AsyncConn, slot: str, targets: Sequence[Target], *, max_changes: int
) -> ReadResult:
    """Read the slot's committed changes (up to about ``max_changes``), store their keys, then
    advance the slot. ``conn`` is in autocommit; the caller holds the reader lock."""
    by_id = {t.id: t for t in targets}
    decoder = Decoder(targets)
    changes = Changes()
    cur = await conn.execute(_q("current_lsn"))
    upto = await cur.fetchone()
    assert upto is not None
    async with conn.transaction():
        async with conn.cursor(name="syncsvc_wal") as reader:
            await reader.execute(
                _q("peek"), {"slot": slot, "upto": upto["lsn"], "changes": max_changes}
            )
            while rows := await reader.fetchmany(FETCH_ROWS):
                for row in rows:
                    decoder.feed(bytes(row["data"]), changes)
        queued = 0
        for target_id, keys in changes.keys.items():
            target = by_id[target_id]
            listed = [list(k) for k in keys]
            for start in range(0, len(listed), KEYS_PER_INBOX_ROW):
                part = listed[start : start + KEYS_PER_INBOX_ROW]
                await conn.execute(_insert_keys(target), {"keys": Jsonb(part)})
            queued += len(listed)
        for target_id in changes.truncated:
            # The table was emptied: its vectors go now (rows written since stay, their keys
            # are queued above); TRUNCATE naming one partition is not published, the sweep
            # removes those.
            await remove_orphans(conn, by_id[target_id])
        if queued or changes.truncated:
            await common.notify(conn, statements.QUEUE_CHANNEL, "wal")
    full = changes.messages >= max_changes
    # Stored: now the slot may forget them. A read that was not cut short saw everything up to
    # ``upto``, which may be past the last change published (writes to other tables): the
    # slot moves there, so it holds no WAL for them.
    if not full:
        await conn.execute(_q("advance"), {"slot": slot, "lsn": str(upto["lsn"])})
    elif changes.end_lsn is not None:
        position = pgoutput.lsn_text(changes.end_lsn)
        await conn.execute(_q("advance"), {"slot": slot, "lsn": position})
    if changes.skipped_updates:
        logger.debug("%d updates left the embedded columns unchanged", changes.skipped_updates)
    return ReadResult(changes.messages, queued, full)
