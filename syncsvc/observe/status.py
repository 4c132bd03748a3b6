"""Per-target status: coverage of the active generation, backlog, failures, pause reason."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from psycopg import sql

from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting, sqlfiles


@dataclass(frozen=True)
class TargetStatus:
    target: str
    table: str
    rows: int
    embedded: int
    pending: int
    in_flight: int
    failed: int
    oldest_pending_seconds: float | None
    rows_per_second: float
    """Vectors written over the last minute, every live generation."""
    eta_seconds: float | None
    """The backlog (pending + in flight) at that rate; None when nothing is being written."""
    active_generation: int | None
    model: str | None
    dimensions: int | None
    paused_reason: str | None
    """Why it is paused, or what keeps it from working (an unreadable table) while not."""
    generations: list[dict[str, Any]]
    drift: str | None = None
    """Why the vectors and the source disagree in a way the daemon is fixing now ("partition
    app.events_p3 attached; sweeping"): rows and pending may not add up meanwhile."""
    capture: str = "triggers"
    """triggers | wal."""
    wal_retained_bytes: int | None = None
    """WAL targets: the WAL the server keeps for the database's slot (shared by them)."""
    wal_lag_bytes: int | None = None
    """WAL targets: WAL written since the last change syncsvc stored from the slot."""
    paused: bool = False
    """Paused (by an operator, drift, a provider refusal ...): ``target resume`` applies."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Unpromoted:
    """A complete generation left beside the active one: it doubles the cost of live edits."""

    target: str
    generation_id: int
    idle_seconds: float
    tokens_per_day: int
    """Tokens embedded for it in the last 24 hours (live edits it still receives)."""
    cost_per_day: float

    def warning(self) -> str:
        return (
            f"generation {self.generation_id} of {self.target} has been complete for "
            f"{self.idle_seconds / 3600:.1f} h but is neither promoted nor dropped: it costs "
            f"{self.tokens_per_day} tokens (${self.cost_per_day:.4f}) a day in live edits "
            f"('syncsvc promote {self.target} {self.generation_id}' or 'syncsvc generation "
            f"drop {self.target} {self.generation_id}')"
        )


async def unpromoted(conn: AsyncConn, grace_seconds: float) -> list[Unpromoted]:
    """Complete generations idle for more than ``grace_seconds``, with what they cost."""
    cur = await conn.execute(sqlfiles.query("status", "unpromoted"), {"grace": grace_seconds})
    found = []
    for row in await cur.fetchall():
        tokens = await _count(
            conn,
            sql.SQL(
                "SELECT coalesce(sum(tokens), 0) AS n FROM syncsvc.{} "
                "WHERE embedded_at > now() - interval '1 day'"
            ).format(quoting.ident(row["table_name"])),
        )
        price = float(row["price_per_million_tokens"] or 0.0)
        found.append(
            Unpromoted(
                row["target"],
                row["generation_id"],
                row["idle_seconds"],
                tokens,
                tokens * price / 1e6,
            )
        )
    return found


def percent(done: int, total: int, digits: int = 1) -> str:
    """``done/total`` as a percentage rounded *down*: 23,004 of 23,008 is 99.9%, never 100%."""
    if total <= 0:
        return "-"
    scale = 10**digits
    value = math.floor(done * 100 * scale / total) / scale
    return f"{value:.{digits}f}%"


def duration(seconds: float | None) -> str:
    """``1h05m`` / ``3m07s``, or ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def seconds(value: float | None) -> str:
    """A lag as ``syncsvc status`` prints it (``138.6s``), ``-`` when there is none."""
    return f"{value:.1f}s" if value else "-"


def rate(rows_per_second: float | None) -> str:
    """A rate as the CLI prints it (``42/s``), ``-`` when nothing is being written."""
    return f"{rows_per_second:.0f}/s" if rows_per_second else "-"


def size(n: int | None) -> str:
    """Bytes as ``syncsvc status`` prints them (``512 B``, ``3.4 MB``)."""
    value = float(n or 0)
    for unit in ("B", "kB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def money(cost: float) -> str:
    """A cost as the CLI prints it: list prices are in US dollars (``$0.0123``)."""
    return f"${cost:.4f}"


@dataclass(frozen=True)
class SlotStatus:
    """The database's replication slot of WAL capture."""

    slot: str
    exists: bool
    wal_status: str | None
    retained_bytes: int | None
    lag_bytes: int | None

    @property
    def usable(self) -> bool:
        return self.exists and self.wal_status != "lost"


async def wal_slot(conn: AsyncConn) -> SlotStatus:
    cur = await conn.execute(sqlfiles.query("wal", "slot_name"))
    named = await cur.fetchone()
    assert named is not None
    cur = await conn.execute(sqlfiles.query("wal", "slot"), {"slot": named["slot"]})
    row = await cur.fetchone()
    if row is None:
        return SlotStatus(named["slot"], False, None, None, None)
    lost = row["wal_status"] if row["invalidation_reason"] is None else "lost"
    return SlotStatus(named["slot"], True, lost, row["retained_bytes"], row["lag_bytes"])


async def collect(conn: AsyncConn) -> list[TargetStatus]:
    """One status per target (with its generations), from the ``syncsvc.status`` view: SQL
    users, the CLI, the API and the admin page see the same figures; WAL targets with their
    slot's retained WAL and lag."""
    rows = await _collect(conn)
    if not any(r.capture == "wal" for r in rows):
        return rows
    slot = await wal_slot(conn)
    return [
        replace(r, wal_retained_bytes=slot.retained_bytes, wal_lag_bytes=slot.lag_bytes)
        if r.capture == "wal"
        else r
        for r in rows
    ]


async def _collect(conn: AsyncConn) -> list[TargetStatus]:
    cur = await conn.execute(sqlfiles.query("status", "target_status"))
    return [
        TargetStatus(
            target=row["target"],
            table=row["source_table"],
            rows=int(row["rows"]),
            embedded=int(row["embedded"]),
            pending=int(row["pending"]),
            in_flight=int(row["in_flight"]),
            failed=int(row["failed"]),
            oldest_pending_seconds=row["oldest_pending_seconds"],
            rows_per_second=float(row["rows_per_second"]),
            eta_seconds=None if row["eta_seconds"] is None else float(row["eta_seconds"]),
            active_generation=row["active_generation"],
            model=row["model"],
            dimensions=row["dimensions"],
            paused_reason=row["paused_reason"],
            generations=list(row["generations"]),
            drift=row["drift"],
            capture=row["capture"] or "triggers",
            paused=bool(row["paused"]),
        )
        for row in await cur.fetchall()
    ]


async def _count(conn: AsyncConn, query: sql.Composed) -> int:
    # A savepoint (or a transaction of its own): a failure must not abort the caller's.
    async with conn.transaction():
        cur = await conn.execute(query)
        row = await cur.fetchone()
    return int(row["n"]) if row else 0
