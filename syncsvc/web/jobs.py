"""The admin page's view of re-embedding jobs and generations.

Jobs and promotion live in ``syncsvc.jobs`` and ``syncsvc.promote``. The page (and ``/metrics``)
keep working, without those sections, on a schema that lacks the jobs table; ``Unavailable``
carries the reason to show instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from syncsvc import jobs
from syncsvc.core import models
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import catalog, common
from syncsvc.store import promote as promotion

ACTIONS = ("pause", "resume", "cancel")


class Unavailable(Exception):
    """Jobs or promotion are not part of this schema."""


@dataclass(frozen=True)
class JobView:
    id: int
    target: str
    generation: int
    model: str
    dimensions: int
    state: str
    done: int
    total: int | None
    """None: not counted yet."""
    progress: float
    cost: float
    eta_seconds: float | None
    error: str | None
    failed: int = 0
    rate: float | None = None
    """Rows per second recently (``syncsvc jobs list``'s rate)."""


async def _table(conn: AsyncConn) -> bool:
    return await common.relation_oid(conn, "syncsvc", "jobs") is not None


async def list_jobs(conn: AsyncConn) -> list[JobView] | None:
    """Every job, newest first; None when this schema has no jobs."""
    if not await _table(conn):
        return None
    views = [
        JobView(
            id=job.id,
            target=job.target,
            generation=job.generation_id,
            model=job.model,
            dimensions=job.dimensions,
            state=str(job.state.value),
            done=job.done_rows,
            total=job.total_rows,
            progress=float(job.fraction),
            cost=float(job.cost),
            eta_seconds=job.eta_seconds,
            error=job.blocked or job.error,
            failed=int(getattr(job, "failed_rows", 0)),
            rate=job.rate,
        )
        for job in await jobs.list_jobs(conn)
    ]
    return sorted(views, key=lambda v: v.id, reverse=True)


async def start(
    conn: AsyncConn,
    settings: Settings,
    target: str,
    *,
    model: str,
    dimensions: int,
    provider: str | None,
    dry_run: bool,
) -> str:
    """Start a re-embedding job (or only estimate it); returns a message for the operator."""
    if dry_run:
        est = await jobs.estimate(
            conn, settings, target, model=model, dimensions=dimensions, provider=provider
        )
        approx = "about " if est.sampled else ""
        return (
            f"dry run: re-embedding {est.target} with {est.model} ({est.dimensions} dims) via "
            f"{est.provider} would embed {est.rows} rows, {approx}{est.tokens} tokens, "
            f"estimated cost {est.cost:.4f}"
        )
    job = await jobs.request_reembed(
        conn, settings, target, model=model, dimensions=dimensions, provider=provider
    )
    return f"job {job.id} started: {job.target} → generation {job.generation_id} ({job.model})"


async def control(conn: AsyncConn, job_id: int, action: str) -> str:
    """Pause, resume or cancel a job."""
    if action not in ACTIONS:
        raise ValueError(f"unknown job action {action!r}")
    job = await getattr(jobs, f"{action}_job")(conn, job_id)
    return f"job {job_id} is now {job.state.value}"


async def promote(
    conn: AsyncConn,
    target: str,
    generation: int,
    *,
    accept_failed: bool = False,
    max_failed: int = 0,
) -> str:
    """Make ``generation`` the target's active one (refused while it is incomplete)."""
    result = await promotion.promote(
        conn, target, generation, accept_failed=accept_failed, max_failed=max_failed
    )
    return f"{result.target}: generation {result.generation.id} is now active"


@dataclass(frozen=True)
class Promotable:
    """Whether the page offers to promote a generation, and what it says otherwise."""

    refusal: str | None
    """Why it may not be promoted (None: it may)."""
    failed: int = 0
    """Rows failed for good; when these are all that stands in the way, the page offers to
    promote without them (the CLI's --accept-failed)."""
    accept_failed_only: bool = False


async def promotion_checks(conn: AsyncConn, max_failed: int = 0) -> dict[int, Promotable] | None:
    """The one promote check (``promote.refusal``) for every non-active generation; coverage
    is measured for building ones only (the others are refused by their state alone)."""
    if not await _table(conn):
        return None
    found: dict[int, Promotable] = {}
    for target in await catalog.load_targets(conn):
        for g in target.generations:
            if g.state is models.GenerationState.ACTIVE:
                continue
            measured = promotion.Coverage(rows=0, current=0, queued=0, orphans=0)
            if g.state is models.GenerationState.BUILDING:
                measured = await promotion.coverage(conn, target, g)
            refusal = promotion.refusal(target, g, measured, max_failed=max_failed)
            accepted = promotion.refusal(target, g, measured, accept_failed=True)
            found[g.id] = Promotable(refusal, measured.failed, refusal is not None and not accepted)
    return found
