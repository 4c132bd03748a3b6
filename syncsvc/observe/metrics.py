"""Prometheus metrics: what the daemon did (counters) and what the database holds (gauges).

Counters and histograms are process-wide and fed by small ``record_*`` hooks that the worker
and the HTTP client call; they never raise, so instrumentation cannot break the data path.
Gauges about targets, the queue and the shared rate budget are read from the database by
``refresh`` when ``/metrics`` is scraped (at most once per ``min_interval``), using the same
``syncsvc.observe.status`` collection as ``syncsvc status`` so both always agree; the web service
sets the job gauges beside it (``record_jobs``), and the daemon's own through ``Host.snapshot``.

Names follow Prometheus conventions: a ``syncsvc_`` prefix, base units (seconds), ``_total``
on counters, and low-cardinality labels (target, generation, endpoint host, status code).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge, Histogram, generate_latest

from syncsvc.core.types import AsyncConn
from syncsvc.db import common, sqlfiles
from syncsvc.observe import slotgauges, status
from syncsvc.observe.jobgauges import JobProgress, record_jobs
from syncsvc.observe.registry import REGISTRY

if TYPE_CHECKING:
    from syncsvc.core.host import Host
    from syncsvc.core.types import RoundStats

logger = logging.getLogger(__name__)

__all__ = ["REGISTRY", "JobProgress", "record_jobs"]
"""Defined beside (``registry``, ``jobgauges``), kept here for the callers of this module."""


LAG_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# --- liveness and readiness -------------------------------------------------------------------
DAEMON_START = Gauge(
    "syncsvc_daemon_start_time_seconds", "Unix time the daemon started.", registry=REGISTRY
)
HEARTBEAT = Gauge(
    "syncsvc_daemon_heartbeat_timestamp_seconds",
    "Unix time of the daemon's last heartbeat; stale means the event loop is stuck.",
    registry=REGISTRY,
)
DAEMON_ERRORS = Counter(
    "syncsvc_daemon_errors_total",
    "Errors of the daemon's own loops (database away, a round that failed), by exception type.",
    ["kind"],
    registry=REGISTRY,
)
UNPROMOTED = Gauge(
    "syncsvc_unpromoted_generations",
    "Complete generations neither promoted nor dropped after the grace period (they double "
    "the cost of live edits).",
    ["target"],
    registry=REGISTRY,
)
READY = Gauge("syncsvc_ready", "1 when /readyz would answer 200.", registry=REGISTRY)
LISTENER_CONNECTED = Gauge(
    "syncsvc_listener_connected", "1 while the LISTEN connection is up.", registry=REGISTRY
)
LEADER = Gauge(
    "syncsvc_scheduler_leader", "1 when this daemon runs the sweep scheduler.", registry=REGISTRY
)
DAEMONS = Gauge(
    "syncsvc_daemons", "Daemons with a heartbeat in the last minute.", registry=REGISTRY
)
ROUNDS_IN_FLIGHT = Gauge(
    "syncsvc_rounds_in_flight", "Claimed rounds this daemon is processing.", registry=REGISTRY
)

# --- targets and the queue (from the database) -------------------------------------------------
QUEUE_ENTRIES = Gauge(
    "syncsvc_queue_entries",
    "Queue entries by target and state (pending, in_flight, failed).",
    ["target", "state"],
    registry=REGISTRY,
)
OLDEST_PENDING = Gauge(
    "syncsvc_queue_oldest_pending_age_seconds",
    "Age of the oldest unfinished queue entry; 0 when the queue is empty.",
    ["target"],
    registry=REGISTRY,
)
SOURCE_ROWS = Gauge(
    "syncsvc_target_source_rows",
    "Rows in the target's source table.",
    ["target"],
    registry=REGISTRY,
)
EMBEDDED_ROWS = Gauge(
    "syncsvc_target_embedded_rows",
    "Rows with a vector, per generation.",
    ["target", "generation", "state"],
    registry=REGISTRY,
)
COVERAGE = Gauge(
    "syncsvc_target_coverage_ratio",
    "Embedded rows of the active generation over source rows.",
    ["target"],
    registry=REGISTRY,
)
DRIFT = Gauge(
    "syncsvc_target_drift",
    "1 while the target's vectors and source disagree in a way the daemon is fixing "
    "(a partition attached, detached or dropped; see status).",
    ["target"],
    registry=REGISTRY,
)
PAUSED = Gauge(
    "syncsvc_target_paused",
    "1 when the target is paused (by an operator, a provider refusal or schema drift).",
    ["target"],
    registry=REGISTRY,
)

# --- work done (from the worker) ----------------------------------------------------------------
LAG = Histogram(
    "syncsvc_commit_to_vector_lag_seconds",
    "Time from a row change being queued (its commit) to its vector being written.",
    ["target"],
    buckets=LAG_BUCKETS,
    registry=REGISTRY,
)
ROWS_EMBEDDED = Counter(
    "syncsvc_rows_embedded_total",
    "Rows whose vectors were written (any live generation).",
    ["target"],
    registry=REGISTRY,
)
ENTRIES_PROCESSED = Counter(
    "syncsvc_queue_entries_processed_total",
    "Queue entries finished by outcome (embedded, unchanged, removed, stale, failed, released).",
    ["outcome"],
    registry=REGISTRY,
)
TOKENS = Counter(
    "syncsvc_embedding_tokens_total",
    "Tokens billed by the API.",
    ["target", "generation"],
    registry=REGISTRY,
)
COST = Counter(
    "syncsvc_embedding_cost_usd_total",
    "Estimated spend from the provider profile's list price (0 when the price is unknown).",
    ["target", "generation"],
    registry=REGISTRY,
)

# --- searches from SQL, per role (from the daemon's query answering) ----------------------------
QUERY_EMBEDDINGS = Counter(
    "syncsvc_query_embeddings_total",
    "Text queries filed from SQL (syncsvc.embed_query) by role and outcome: embedded (billed), "
    "cached (free), refused (over a limit or without a grant), failed.",
    ["role", "outcome"],
    registry=REGISTRY,
)
QUERY_TOKENS = Counter(
    "syncsvc_query_tokens_total",
    "Tokens of the query embeddings billed on behalf of each role.",
    ["role"],
    registry=REGISTRY,
)

# --- the embeddings API (from the HTTP client) --------------------------------------------------
API_REQUESTS = Counter(
    "syncsvc_api_requests_total",
    "Embedding API requests by endpoint host and HTTP status (or transport error).",
    ["endpoint", "code"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "syncsvc_api_errors_total",
    "Embedding API requests that did not succeed, by endpoint host and status.",
    ["endpoint", "code"],
    registry=REGISTRY,
)
API_RATE_LIMITED = Counter(
    "syncsvc_api_rate_limited_total", "HTTP 429 answers.", ["endpoint"], registry=REGISTRY
)
API_LATENCY = Histogram(
    "syncsvc_api_request_duration_seconds",
    "Embedding API request latency (excluding time spent waiting for the rate budget).",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
    registry=REGISTRY,
)
RATE_WAIT = Counter(
    "syncsvc_rate_budget_wait_seconds_total",
    "Time requests waited for the account's shared rate budget.",
    ["account"],
    registry=REGISTRY,
)
BUDGET_RPM = Gauge(
    "syncsvc_rate_budget_requests_per_minute",
    "The account's request budget shared by all daemons.",
    ["account"],
    registry=REGISTRY,
)
BUDGET_TPM = Gauge(
    "syncsvc_rate_budget_tokens_per_minute",
    "The account's token budget shared by all daemons.",
    ["account"],
    registry=REGISTRY,
)
BUDGET_BOOKED = Gauge(
    "syncsvc_rate_budget_booked_ahead_seconds",
    "How far ahead the account's request slots are reserved (0 = budget to spare).",
    ["account"],
    registry=REGISTRY,
)
LIMIT_FACTOR = Gauge(
    "syncsvc_rate_limit_factor",
    "Fraction of the configured rate in use after 429 slow-downs (1 = unthrottled).",
    ["provider"],
    registry=REGISTRY,
)


def endpoint(base_url: str) -> str:
    """The label for an API base URL: its host (never a path, query or credential)."""
    parts = urlsplit(base_url)
    return parts.hostname or "unknown"


def record_api_reply(base_url: str, code: int | str, seconds: float | None) -> None:
    """One API request finished with HTTP status ``code`` (or a transport error name)."""
    try:
        host = endpoint(base_url)
        label = str(code)
        API_REQUESTS.labels(host, label).inc()
        if seconds is not None:
            API_LATENCY.labels(host).observe(seconds)
        if label != "200":
            API_ERRORS.labels(host, label).inc()
        if label == "429":
            API_RATE_LIMITED.labels(host).inc()
    except Exception:  # instrumentation must never break embedding
        logger.debug("metrics hook failed", exc_info=True)


def record_written(
    target: str,
    generation: int,
    *,
    tokens: int,
    price_per_million: float = 0.0,
    enqueued_at: Iterable[datetime | None] = (),
) -> None:
    """Vectors were written: count their tokens and cost, and observe each row's lag."""
    try:
        gen = str(generation)
        TOKENS.labels(target, gen).inc(tokens)
        COST.labels(target, gen).inc(tokens * price_per_million / 1_000_000)
        now = datetime.now(UTC)
        histogram = LAG.labels(target)
        for stamp in enqueued_at:
            if stamp is not None:
                histogram.observe(max(0.0, (now - stamp).total_seconds()))
    except Exception:
        logger.debug("metrics hook failed", exc_info=True)


def price_per_million(profile: Any, model: str) -> float:
    """The list price of ``model`` in a provider profile, 0.0 when unknown."""
    try:
        return float(profile.model(model).price_per_million_tokens)
    except Exception:
        return 0.0


def record_round(stats: RoundStats) -> None:
    """Daemon round hook: entries by outcome, rows embedded by target."""
    for target, rows in stats.per_target.items():
        if rows:
            ROWS_EMBEDDED.labels(target).inc(rows)
    for outcome in ("embedded", "unchanged", "removed", "stale", "failed", "released"):
        value = getattr(stats, outcome)
        if value:
            ENTRIES_PROCESSED.labels(outcome).inc(value)


def record_query(role: str, outcome: str, tokens: int | None = None) -> None:
    """A text query from SQL was answered for ``role``: count it by outcome, and its tokens."""
    try:
        QUERY_EMBEDDINGS.labels(role, outcome).inc()
        if tokens:
            QUERY_TOKENS.labels(role).inc(tokens)
    except Exception:
        logger.debug("metrics hook failed", exc_info=True)


def record_budget_wait(account: str, seconds: float) -> None:
    if seconds > 0:
        RATE_WAIT.labels(account).inc(seconds)


def _reset(gauge: Gauge) -> None:
    gauge.clear()


async def refresh(
    conn: AsyncConn, host: Host | None = None, *, unpromoted_grace_seconds: float | None = None
) -> list[status.TargetStatus]:
    """Set the database-derived gauges; returns the status rows it read."""
    rows = await status.collect(conn)
    for gauge in (
        QUEUE_ENTRIES,
        OLDEST_PENDING,
        SOURCE_ROWS,
        EMBEDDED_ROWS,
        COVERAGE,
        PAUSED,
        DRIFT,
    ):
        _reset(gauge)
    for row in rows:
        QUEUE_ENTRIES.labels(row.target, "pending").set(row.pending)
        QUEUE_ENTRIES.labels(row.target, "in_flight").set(row.in_flight)
        QUEUE_ENTRIES.labels(row.target, "failed").set(row.failed)
        OLDEST_PENDING.labels(row.target).set(row.oldest_pending_seconds or 0.0)
        SOURCE_ROWS.labels(row.target).set(row.rows)
        COVERAGE.labels(row.target).set(row.embedded / row.rows if row.rows else 1.0)
        PAUSED.labels(row.target).set(1 if row.paused_reason else 0)
        DRIFT.labels(row.target).set(1 if row.drift else 0)
        for generation in row.generations:
            EMBEDDED_ROWS.labels(row.target, str(generation["id"]), generation["state"]).set(
                generation["embedded"]
            )
    await _refresh_ops(conn)
    await slotgauges.refresh(conn, rows)
    _reset(UNPROMOTED)
    grace = unpromoted_grace_seconds
    if grace is None:
        grace = host.settings.jobs.unpromoted_grace_seconds if host else 3600.0
    for idle in await status.unpromoted(conn, grace):
        UNPROMOTED.labels(idle.target).inc()
    if host is not None:
        refresh_daemon(host)
    return rows


async def _refresh_ops(conn: AsyncConn) -> None:
    if await common.relation_oid(conn, "syncsvc", "rate_budget") is None:
        return
    for gauge in (BUDGET_RPM, BUDGET_TPM, BUDGET_BOOKED):
        _reset(gauge)
    cur = await conn.execute(sqlfiles.query("ops", "budgets"))
    for row in await cur.fetchall():
        BUDGET_RPM.labels(row["account"]).set(row["rpm"] or 0)
        BUDGET_TPM.labels(row["account"]).set(row["tpm"] or 0)
        BUDGET_BOOKED.labels(row["account"]).set(row["booked_ahead_seconds"])
    cur = await conn.execute(sqlfiles.query("ops", "list_daemons"))
    DAEMONS.set(sum(1 for r in await cur.fetchall() if r["seen_seconds_ago"] < 60))


def refresh_daemon(host: Host) -> None:
    """Set the gauges about this daemon itself (its timer calls this; so does a scrape)."""
    state = host.snapshot()
    ROUNDS_IN_FLIGHT.set(state.rounds_in_flight)
    LISTENER_CONNECTED.set(1 if state.listener_connected else 0)
    HEARTBEAT.set(time.time())
    _reset(LIMIT_FACTOR)
    for name, factor in state.limit_factors.items():
        LIMIT_FACTOR.labels(name).set(factor)


def exposition() -> bytes:
    """The registry in Prometheus text format."""
    return bytes(generate_latest(REGISTRY))
