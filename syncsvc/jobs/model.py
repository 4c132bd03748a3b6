"""Re-embedding jobs: the job model, as stored in ``syncsvc.jobs`` and read back.

A job builds one new generation of a target beside its active one. The daemon's backfill
runner (:mod:`syncsvc.jobs.backfill`) feeds it; live edits reach the new generation on their
own, because the worker writes every live (active or building) generation. Requesting a job is
``syncsvc.jobs.reembed``; pausing, resuming and cancelling it, ``syncsvc.jobs.control``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

from syncsvc.core.errors import NotFoundError
from syncsvc.core.models import PkValue
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles

BACKFILL_PRIORITY = 2
"""Below live edits (0) and the sweep (1): a re-embed never delays fresh changes."""


class JobState(StrEnum):
    PENDING = "pending"
    """Requested; the daemon has not validated and started it yet."""
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    """Every row has a current vector in the new generation, except ``failed_rows`` rows the
    API rejected for good (promoted if auto_promote and allowed, see ``promote.refusal``)."""
    CANCELLED = "cancelled"
    """Stopped by an operator: no request is sent for its generation any more."""
    FAILED = "failed"
    """Could not start or go on (e.g. the model is not offered); resumable."""

    @property
    def open(self) -> bool:
        return self in (JobState.PENDING, JobState.RUNNING, JobState.PAUSED)


@dataclass(frozen=True)
class Job:
    """One re-embedding job and its progress, as stored in ``syncsvc.jobs``."""

    id: int
    target: str
    target_id: int
    generation_id: int
    provider: str
    model: str
    dimensions: int
    state: JobState
    auto_promote: bool
    max_queued: int | None
    cursor: PkValue | None
    cursor_inclusive: bool
    scan_done: bool
    passes: int
    total_rows: int | None
    enqueued_rows: int
    done_rows: int
    tokens: int
    cost: float
    rate: float | None
    error: str | None
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    target_paused: str | None = None
    failed_rows: int = 0
    """Rows left failed for good when the job completed (see ``syncsvc failed list``)."""

    @property
    def blocked(self) -> str | None:
        """Why an unfinished job makes no progress: its target is paused."""
        if self.target_paused is None or self.state not in (JobState.PENDING, JobState.RUNNING):
            return None
        return f"blocked: target paused ({self.target_paused})"

    @property
    def fraction(self) -> float:
        if not self.total_rows:
            return 1.0 if self.state is JobState.COMPLETED else 0.0
        return min(1.0, self.done_rows / self.total_rows)

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the recent rate (None when unknown or not running)."""
        if self.state is not JobState.RUNNING or not self.rate or self.total_rows is None:
            return None
        if self.blocked:
            return None
        return max(0.0, self.total_rows - self.done_rows) / self.rate

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["state"] = self.state.value
        out["fraction"] = round(self.fraction, 4)
        out["eta_seconds"] = self.eta_seconds
        out["blocked"] = self.blocked
        return out


@dataclass(frozen=True)
class Estimate:
    """What a re-embed would embed and cost, computed without calling any API."""

    target: str
    provider: str
    model: str
    dimensions: int
    rows: int
    tokens: int
    price_per_million_tokens: float
    sampled: bool
    seconds: float = 0.0
    """How long the embedding takes at ``ASSUMED_LATENCY`` per request with the provider's
    concurrency, or longer if its rpm/tpm budget allows no faster (a live daemon's edits and
    other targets share that budget)."""

    @property
    def cost(self) -> float:
        return self.tokens * self.price_per_million_tokens / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": round(self.cost, 6)}


def _job(row: dict[str, Any]) -> Job:
    return Job(
        id=row["id"],
        target=row["target"],
        target_id=row["target_id"],
        generation_id=row["generation_id"],
        provider=row["provider"],
        model=row["model"],
        dimensions=row["dimensions"],
        state=JobState(row["state"]),
        auto_promote=row["auto_promote"],
        max_queued=row["max_queued"],
        cursor=row["cursor"],
        cursor_inclusive=row["cursor_inclusive"],
        scan_done=row["scan_done"],
        passes=row["passes"],
        total_rows=row["total_rows"],
        enqueued_rows=row["enqueued_rows"],
        done_rows=row["done_rows"],
        tokens=row["tokens"],
        cost=row["cost"],
        rate=row["rate"],
        error=row["error"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        target_paused=row.get("target_paused"),
        failed_rows=row.get("failed_rows") or 0,
    )


async def list_jobs(conn: AsyncConn, *, open_only: bool = False) -> list[Job]:
    """Jobs in id order (only unfinished ones with ``open_only``)."""
    cur = await conn.execute(
        sqlfiles.query("jobs", "list_jobs"), {"id": None, "open_only": open_only}
    )
    return [_job(r) for r in await cur.fetchall()]


async def get_job(conn: AsyncConn, job_id: int) -> Job:
    cur = await conn.execute(
        sqlfiles.query("jobs", "list_jobs"), {"id": job_id, "open_only": False}
    )
    row = await cur.fetchone()
    if row is None:
        raise NotFoundError(f"no job {job_id} (see 'syncsvc jobs list')")
    return _job(row)
