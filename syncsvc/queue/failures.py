"""Rows that failed to embed: listed from ``syncsvc.failures``, retried by
``syncsvc.retry_failed`` (the one implementation behind the CLI, the API and the admin page)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from syncsvc.core.errors import NotFoundError
from syncsvc.core.models import PkValue
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles


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


@dataclass(frozen=True)
class RetryOutcome:
    """What became of the rows ``failed retry`` queued again, once they settled (or the wait
    ran out)."""

    retried: int
    succeeded: int = 0
    """Embedded this time (they left the queue)."""
    failed_again: int = 0
    pending: int = 0
    """Still queued or being embedded when the wait ended (a daemon must be running)."""
    errors: dict[str, int] = field(default_factory=dict)
    """The API's message for the rows that failed again, with how many got it."""
    waited: bool = True
    """False when no daemon was running to retry them: nothing to wait for."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if not self.waited:
            return (
                f"{self.retried} failed rows queued again; no daemon is running to retry them "
                "(start 'syncsvc run')"
            )
        text = f"{self.retried} failed rows retried: {self.succeeded} embedded"
        text += f", {self.failed_again} failed again"
        if self.pending:
            text += f", {self.pending} still queued (is a daemon running? see 'syncsvc status')"
        for error, count in self.errors.items():
            text += f"; {count} × {error}"
        return text


async def retry_and_wait(
    conn: AsyncConn, target: str | None = None, *, wait_seconds: float = 30.0, poll: float = 0.2
) -> RetryOutcome:
    """Retry failed rows, then wait (at most ``wait_seconds``) for a daemon to settle them and
    report how each ended. The daemon does the work; the queue tells the outcome: a retried
    row that left the queue was embedded, one that is ``failed`` again says why."""
    async with conn.transaction():
        cur = await conn.execute(sqlfiles.query("ops", "failed_keys"), {"target": target})
        keys = await cur.fetchall()
        retried = await retry_failed(conn, target)
    cur = await conn.execute(sqlfiles.query("ops", "daemon_running"))
    running = await cur.fetchone()
    if not retried or not (running and running["running"]):
        return RetryOutcome(
            retried=retried, pending=retried, waited=bool(running and running["running"])
        )
    params = {
        "target_ids": [k["target_id"] for k in keys],
        "pks": [Jsonb(k["pk"]) for k in keys],
    }
    deadline = time.monotonic() + wait_seconds
    while True:
        cur = await conn.execute(sqlfiles.query("ops", "retry_outcome"), params)
        rows = await cur.fetchall()
        settled = {r["state"]: int(r["n"]) for r in rows if r["last_error"] is None}
        pending = sum(int(r["n"]) for r in rows if r["state"] in ("pending", "in_flight"))
        if not pending or time.monotonic() >= deadline:
            break
        await asyncio.sleep(poll)
    errors = {str(r["last_error"]): int(r["n"]) for r in rows if r["state"] == "failed"}
    return RetryOutcome(
        retried=retried,
        succeeded=settled.get("embedded", 0),
        failed_again=sum(errors.values()),
        pending=pending,
        errors=errors,
    )
