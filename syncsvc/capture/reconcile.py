"""The reconciliation sweep of every running target (or one): missing or stale rows are queued;
a target whose table is gone or changed shape, or whose definition cannot be turned into SQL,
is paused with the cause, and the others are swept all the same."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psycopg

from syncsvc.capture import drift
from syncsvc.capture.sweep import sweep_target
from syncsvc.core.errors import SyncsvcError
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles
from syncsvc.db.catalog import load_targets

logger = logging.getLogger(__name__)


async def sweep_targets(
    conn: AsyncConn,
    *,
    target_id: int | None,
    chunk_rows: int,
    on_chunk: Callable[[], None] | None = None,
) -> int:
    """Sweep every running target (``target_id`` None) or that one; returns the rows queued."""
    enqueued = 0
    await drift.pause_for_capture_errors(conn)
    for target in await load_targets(conn):
        if target.paused_reason is not None or target_id not in (None, target.id):
            continue
        try:
            result = await sweep_target(conn, target, chunk_rows=chunk_rows, on_chunk=on_chunk)
        except (psycopg.Error, SyncsvcError) as exc:
            if not drift.is_target_fault(exc):
                raise
            reason = await drift.diagnose(conn, target, exc)
            await conn.execute(
                sqlfiles.query("catalog", "pause_target"),
                {"id": target.id, "reason": reason},
            )
            logger.error("pausing target %s: %s", target.name, reason)
            continue
        enqueued += result.enqueued
    return enqueued
