"""Statements many stages issue, written once: NOTIFY, and whether a relation exists."""

from __future__ import annotations

from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles


async def notify(conn: AsyncConn, channel: str, payload: str) -> None:
    """``pg_notify`` on ``conn``: delivered when its transaction commits, dropped on rollback."""
    await conn.execute(sqlfiles.query("ops", "notify"), {"channel": channel, "payload": payload})


async def relation_oid(conn: AsyncConn, schema: str, name: str) -> int | None:
    """The oid of relation ``schema.name`` (names as written, unquoted), None when absent."""
    cur = await conn.execute(
        sqlfiles.query("catalog", "relation_oid"), {"schema": schema, "name": name}
    )
    row = await cur.fetchone()
    return None if row is None or row["oid"] is None else int(row["oid"])


async def set_lock_timeout(conn: AsyncConn, timeout: str) -> None:
    """``lock_timeout`` for the rest of the current transaction (``timeout`` like ``'500ms'``)."""
    await conn.execute(sqlfiles.query("ops", "set_lock_timeout"), {"timeout": timeout})
