"""Re-embedding jobs: the job model, and what admins do to jobs (request, pause, resume, cancel).

A job builds one new generation of a target beside its active one. The daemon's backfill
runner (:mod:`syncsvc.backfill`) feeds it; live edits reach the new generation on their own,
because the worker writes every live (active or building) generation.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc import quoting, sqlfiles, statements
from syncsvc.catalog import find_generation, get_target
from syncsvc.database import AsyncConn
from syncsvc.errors import NotFoundError, ValidationError
from syncsvc.models import GenerationState, PkValue, Target
from syncsvc.providers.profiles import ModelProfile, Protocol, ProviderProfile
from syncsvc.providers.registry import provider_profile, publish_models
from syncsvc.settings import Settings
from syncsvc.targets import check_sparse
from syncsvc.tokens import counter

BACKFILL_PRIORITY = 2
"""Below live edits (0) and the sweep (1): a re-embed never delays fresh changes."""

ESTIMATE_SAMPLE_ROWS = 5000
"""Dry runs count the tokens of every row up to this many, and of a sample beyond."""


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


def resolve_model(
    settings: Settings,
    provider: str,
    model: str,
    dimensions: int,
    options: dict[str, Any] | None = None,
) -> tuple[ModelProfile, str]:
    """The model's profile and vector space, or a ValidationError saying what is offered
    (including generation ``options`` the provider cannot honour, such as sparse output)."""
    profile = provider_profile(provider, settings)
    found = profile.model(model)
    if dimensions not in found.dimensions:
        allowed = "/".join(str(d) for d in found.dimensions)
        raise ValidationError(f"{model} does not offer {dimensions} dimensions ({allowed})")
    if options and options.get("sparse"):
        check_sparse(profile, found)
    configured = settings.providers.get(provider)
    space = (configured.space if configured else None) or found.space or profile.name
    return found, space


def _provider_of(target: Target, provider: str | None) -> str:
    if provider:
        return provider
    return target.active.provider if target.active else "local-hash"


async def request_reembed(
    conn: AsyncConn,
    settings: Settings,
    target_name: str,
    *,
    model: str,
    dimensions: int,
    provider: str | None = None,
    auto_promote: bool = False,
    max_queued: int | None = None,
    options: dict[str, Any] | None = None,
) -> Job:
    """Validate, then create the job and its building generation via ``syncsvc.request_reembed``.

    The SQL function is the one entry point (psql users call it directly), so both paths
    create exactly the same rows and the same vector table. ``options`` (None: those of the
    active generation, e.g. sparse output) shape the new vector space.
    """
    target = await get_target(conn, target_name)
    provider = _provider_of(target, provider)
    inherited = target.active.options if target.active else {}
    _, space = resolve_model(
        settings, provider, model, dimensions, inherited if options is None else options
    )
    # The SQL function checks against the published models: publish this caller's view of
    # the provider, which it has just validated against.
    await publish_models(conn, settings, only=provider)
    try:
        cur = await conn.execute(
            sqlfiles.query("jobs", "request_reembed"),
            {
                "target": target.name,
                "model": model,
                "dimensions": dimensions,
                "provider": provider,
                "auto_promote": auto_promote,
                "space": space,
                "max_queued": max_queued,
                "options": None if options is None else Jsonb(options),
            },
        )
    except (psycopg.errors.RaiseException, psycopg.errors.UniqueViolation) as exc:
        hint = f" ({exc.diag.message_hint})" if exc.diag.message_hint else ""
        raise ValidationError(f"{exc.diag.message_primary}{hint}") from None
    row = await cur.fetchone()
    assert row is not None
    return await get_job(conn, row["id"])


async def options_with_sparse(conn: AsyncConn, target_name: str, sparse: bool) -> dict[str, Any]:
    """The active generation's options with sparse output switched on or off."""
    target = await get_target(conn, target_name)
    options = dict(target.active.options) if target.active else {}
    if sparse:
        options["sparse"] = True
    else:
        options.pop("sparse", None)
    return options


async def estimate(
    conn: AsyncConn,
    settings: Settings,
    target_name: str,
    *,
    model: str,
    dimensions: int,
    provider: str | None = None,
) -> Estimate:
    """Rows, tokens and cost of re-embedding a target; reads the source, spends nothing."""
    target = await get_target(conn, target_name)
    provider = _provider_of(target, provider)
    found, _ = resolve_model(settings, provider, model, dimensions)
    tokenizer = counter(provider_profile(provider, settings).tokenizer)
    text = statements.input_expr(target, "s")
    cur = await conn.execute(
        sql.SQL("SELECT count(*) AS n FROM {} s WHERE {}").format(
            statements.source(target), statements.has_text(target, "s")
        )
    )
    row = await cur.fetchone()
    rows = int(row["n"]) if row else 0
    sampled = rows > ESTIMATE_SAMPLE_ROWS
    sample: sql.Composable = sql.SQL("")
    if sampled:
        # BERNOULLI reads every page but returns a fair sample: tokens scale linearly.
        percent = min(100.0, 100.0 * ESTIMATE_SAMPLE_ROWS * 1.2 / rows)
        sample = sql.SQL("TABLESAMPLE BERNOULLI ({}) REPEATABLE ({})").format(
            quoting.literal(percent), quoting.literal(random.randint(1, 1_000_000))
        )
    cur = await conn.execute(
        sql.SQL("SELECT {} AS input FROM {} s {} WHERE {}").format(
            text, statements.source(target), sample, statements.has_text(target, "s")
        )
    )
    counted = [tokenizer.count(r["input"]) for r in await cur.fetchall()]
    tokens = sum(counted)
    if sampled and counted:
        tokens = round(tokens / len(counted) * rows)
    return Estimate(
        target=target.name,
        provider=provider,
        model=model,
        dimensions=dimensions,
        rows=rows,
        tokens=tokens,
        price_per_million_tokens=found.price_per_million_tokens,
        sampled=sampled,
        seconds=embedding_seconds(provider_profile(provider, settings), rows, tokens),
    )


ASSUMED_LATENCY = 0.2
"""Seconds per embedding request assumed by estimates (DashScope's typical round trip)."""


def embedding_seconds(profile: ProviderProfile, rows: int, tokens: int) -> float:
    """Time to embed ``rows`` (``tokens`` in all) through ``profile``: its concurrency at
    ``ASSUMED_LATENCY``, or its rpm/tpm budget if that is the tighter bound."""
    if rows == 0 or profile.protocol is Protocol.LOCAL:
        return 0.0
    requests = math.ceil(rows / profile.max_inputs_per_request)
    seconds = requests * ASSUMED_LATENCY / max(1, profile.concurrency)
    if profile.rpm:
        seconds = max(seconds, requests * 60.0 / profile.rpm)
    if profile.tpm:
        seconds = max(seconds, tokens * 60.0 / profile.tpm)
    return seconds


async def _lock(conn: AsyncConn, job_id: int) -> Job:
    await conn.execute(sqlfiles.query("jobs", "lock_job_wait"), {"id": job_id})
    return await get_job(conn, job_id)


async def _set_state(conn: AsyncConn, job: Job, state: JobState, error: str | None = None) -> None:
    await conn.execute(
        sqlfiles.query("jobs", "set_state"), {"id": job.id, "state": state.value, "error": error}
    )


async def give_back(conn: AsyncConn, target: Target, job: Job) -> int:
    """Remove the job's rows still waiting in the queue and rewind its cursor to the first.

    Rows already being embedded finish. Rows before the rewound cursor are done, in flight, or
    queued by a live edit, so resuming skips nothing and redoes nothing.
    """
    first_typed = statements.pk_from_json(target, sql.SQL("d.pk"))
    cur = await conn.execute(
        sql.SQL(
            """WITH d AS (
                   DELETE FROM syncsvc.queue
                   WHERE target_id = %(target_id)s AND priority = %(priority)s
                     AND state = 'pending'
                   RETURNING pk
               )
               SELECT d.pk, count(*) OVER () AS n FROM d ORDER BY {} LIMIT 1"""
        ).format(first_typed),
        {"target_id": target.id, "priority": BACKFILL_PRIORITY},
    )
    row = await cur.fetchone()
    if row is None:
        return 0
    await conn.execute(sqlfiles.query("jobs", "rewind"), {"id": job.id, "cursor": Jsonb(row["pk"])})
    return int(row["n"])


async def pause_job(conn: AsyncConn, job_id: int) -> Job:
    """Stop feeding a job and give back its queued rows; its cursor keeps the position."""
    async with conn.transaction():
        job = await _lock(conn, job_id)
        if job.state not in (JobState.PENDING, JobState.RUNNING):
            raise ValidationError(f"job {job_id} is {job.state.value}; only running jobs pause")
        await _set_state(conn, job, JobState.PAUSED)
        await give_back(conn, await get_target(conn, job.target), job)
    return await get_job(conn, job_id)


async def resume_job(conn: AsyncConn, job_id: int) -> Job:
    """Continue a paused (or failed) job from its cursor."""
    async with conn.transaction():
        job = await _lock(conn, job_id)
        if job.state not in (JobState.PAUSED, JobState.FAILED):
            raise ValidationError(f"job {job_id} is {job.state.value}; only paused jobs resume")
        # Never started: the daemon validates it first.
        state = JobState.RUNNING if job.started_at else JobState.PENDING
        try:
            await _set_state(conn, job, state)
        except psycopg.errors.UniqueViolation:
            raise ValidationError(
                f"target {job.target} has another open job; cancel it first"
            ) from None
        await conn.execute(
            sqlfiles.query("jobs", "set_generation_state"),
            {"id": job.generation_id, "state": GenerationState.BUILDING.value},
        )
        await conn.execute("SELECT pg_notify(%s, %s)", (statements.QUEUE_CHANNEL, f"job:{job.id}"))
    return await get_job(conn, job_id)


async def cancel_job(conn: AsyncConn, job_id: int, *, drop: bool = False) -> Job:
    """Cancel a job: spending on its generation stops when this commits.

    Its queued rows leave the queue; the generation becomes ``cancelled``, so no request is
    sent for it any more (a worker checks the state right before each request, once it holds
    a request slot) and answers to requests already in flight are discarded (the write checks
    the state under a lock). The generation is kept for inspection, dropped by ``syncsvc
    generation drop``, or, with ``drop``, deleted with its vector table right away.
    """
    async with conn.transaction():
        job = await _lock(conn, job_id)
        if job.state is JobState.COMPLETED or job.state is JobState.CANCELLED:
            raise ValidationError(f"job {job_id} is already {job.state.value}")
        target = await get_target(conn, job.target)
        generation = find_generation(target, job.generation_id)
        if generation.state is GenerationState.ACTIVE:
            raise ValidationError(f"generation {generation.id} is already active")
        await _set_state(conn, job, JobState.CANCELLED)
        await give_back(conn, target, job)
        if drop:
            await conn.execute(sqlfiles.query("jobs", "delete_generation"), {"id": generation.id})
            await conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(statements.vector_table(generation))
            )
        else:
            await conn.execute(
                sqlfiles.query("jobs", "set_generation_state"),
                {"id": generation.id, "state": GenerationState.CANCELLED.value},
            )
    if drop:
        return job  # its row went with the generation (ON DELETE CASCADE)
    return await get_job(conn, job_id)


async def fail_job(conn: AsyncConn, job: Job, error: str) -> None:
    """Mark a job failed, and its generation, so nothing keeps writing to it (nor offers to
    promote it)."""
    await _set_state(conn, job, JobState.FAILED, error)
    await conn.execute(
        sqlfiles.query("jobs", "set_generation_state"),
        {"id": job.generation_id, "state": GenerationState.FAILED.value},
    )
