"""Rows that failed to embed: listed from ``syncsvc.failures``, retried by
``syncsvc.retry_failed`` (the one implementation behind the CLI, the API and the admin page)."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from syncsvc import sqlfiles
from syncsvc.database import AsyncConn
from syncsvc.errors import NotFoundError
from syncsvc.models import PkValue


@dataclass(frozen=True)
class FailedRow:
    """A row that exhausted its attempts or that the API rejected."""

    target: str
    generation: int | None
    """The generation it failed in (None: every live one)."""
    pk: PkValue
    attempts: int
    last_error: str | None
    request_id: str | None
    updated_at: dt.datetime

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["updated_at"] = self.updated_at.isoformat()
        return out


async def list_failed(
    conn: AsyncConn, target: str | None = None, limit: int = 100
) -> list[FailedRow]:
    """Failed rows, oldest failure first (of one target, or all)."""
    cur = await conn.execute(
        sqlfiles.query("queue", "list_failed"), {"target": target, "limit": limit}
    )
    return [FailedRow(**row) for row in await cur.fetchall()]


async def retry_failed(conn: AsyncConn, target: str | None = None) -> int:
    """Queue failed rows again with fresh attempts (of one target, or all); returns how many."""
    try:
        cur = await conn.execute(sqlfiles.query("queue", "retry_failed"), {"target": target})
    except psycopg.errors.NoDataFound:
        raise NotFoundError(f"no target named {target!r} (see 'syncsvc target list')") from None
    row = await cur.fetchone()
    return int(row["retried"]) if row else 0
