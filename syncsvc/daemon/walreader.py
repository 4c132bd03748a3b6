"""The WAL reader: the background service that feeds the queue from the slot (``capture/wal``).

Runs in every daemon; one at a time reads (a session advisory lock taken for each read, so a
daemon that dies, kill -9 included, hands over at once). The loop is adaptive: right away
while reads come back full, soon after one that found changes, backing off to
``IDLE_SECONDS`` while the database is quiet. Before reading it makes sure the slot is usable:
a slot dropped or invalidated pauses the WAL targets with the reason, and a new slot and a
recovery sweep bring them back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

import psycopg
from psycopg_pool import AsyncConnectionPool

from syncsvc.capture import slots, wal
from syncsvc.core.errors import SyncsvcError
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.core.waiting import sleep_unless
from syncsvc.db import sqlfiles
from syncsvc.db.catalog import load_targets

logger = logging.getLogger(__name__)

BUSY_SECONDS = 0.01
"""After a read that found changes: the next transaction is likely close behind."""
IDLE_SECONDS = 0.2
"""The longest wait between reads of a quiet slot (a change waits at most this long)."""
NO_TARGET_SECONDS = 2.0
"""Between looks for WAL targets while there is none (a new one's slot keeps its changes)."""
GUARD_SECONDS = 1.0
"""Between looks for published tables that lost their key (PostgreSQL then refuses the
application's UPDATEs on them until they leave the publication)."""
MAX_CHANGES = 20_000
"""Changes per read (whole transactions: a bigger one is read whole)."""


class WalHost(Protocol):
    """What the WAL reader needs of a daemon."""

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConn]: ...

    @property
    def stop_event(self) -> asyncio.Event: ...

    @property
    def wake(self) -> asyncio.Event: ...


async def read_round(
    conn: AsyncConn, *, chunk_rows: int = 5000, guard: bool = True
) -> wal.ReadResult | None:
    """One turn: None when there is no WAL target; nothing read when another daemon reads.
    ``guard``: first keep tables without a replica identity out of the publication."""
    tracked = slots.wal_targets(await load_targets(conn))
    if not tracked:
        return None
    lock = {"lock": wal.READER_LOCK}
    cur = await conn.execute(sqlfiles.query("wal", "try_reader_lock"), lock)
    row = await cur.fetchone()
    if row is None or not row["mine"]:
        return wal.ReadResult(0, 0, False)
    try:
        if guard:
            await slots.guard_publication(conn, tracked, chunk_rows=chunk_rows)
        slot = await slots.slot_name(conn)
        reason = await slots.pause_if_lost(conn, tracked, slot)
        if reason is not None:
            queued = await slots.recover(conn, reason, chunk_rows=chunk_rows)
            return wal.ReadResult(0, queued, False)
        # Paused targets too: their changes keep being captured, as with triggers.
        return await wal.read_once(conn, slot, tracked, max_changes=MAX_CHANGES)
    finally:
        if not conn.broken:
            await conn.execute(sqlfiles.query("wal", "reader_unlock"), lock)


async def wal_service(host: WalHost) -> None:
    """Read the slot until the daemon stops."""
    delay = IDLE_SECONDS
    guarded = float("-inf")
    while not host.stop_event.is_set():
        result: wal.ReadResult | None = None
        guard = time.monotonic() - guarded >= GUARD_SECONDS
        try:
            async with host.pool.connection() as conn:
                result = await read_round(
                    conn, chunk_rows=host.settings.worker.sweep_chunk_rows, guard=guard
                )
            if guard:
                guarded = time.monotonic()
        except (psycopg.Error, SyncsvcError) as exc:
            logger.warning("reading the replication slot failed: %s", exc)
        if result is not None and result.queued:
            host.wake.set()
        if result is None:
            delay = NO_TARGET_SECONDS
        elif result.full:
            delay = 0.0
        elif result.messages:
            delay = BUSY_SECONDS
        else:
            delay = min(IDLE_SECONDS, max(BUSY_SECONDS, delay * 2))
        if delay and await sleep_unless(host.stop_event, delay):
            return
