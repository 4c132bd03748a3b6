"""The last hour at a glance: samples the daemon takes every few seconds, in a ring buffer.

Rows per second, commit-to-vector lag (p50/p99), queue depth, API errors and 429s, and the
progress of each unfinished job: what the admin page draws and what tells a stalled target or
job from a healthy one. The buffer has a fixed size (window / interval samples) and lives in
memory only: Grafana keeps the long view, this is what one daemon saw in the last hour.

Rates and lag come from this process (``Host.snapshot`` and the ``metrics`` counters); queue
depth and job progress from the database, so they count every daemon's work.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from syncsvc.core.host import HostSnapshot
from syncsvc.core.types import AsyncConn
from syncsvc.core.waiting import sleep_unless
from syncsvc.db import common, sqlfiles
from syncsvc.observe import metrics

logger = logging.getLogger(__name__)

WINDOW_SECONDS = 3600.0
T = TypeVar("T")


class Ring(Generic[T]):
    """A fixed number of the newest items, oldest first; appending to a full ring drops the
    oldest (memory stays bounded however long the daemon runs)."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a ring holds at least one item, not {capacity}")
        self._items: deque[T] = deque(maxlen=capacity)

    @property
    def capacity(self) -> int:
        return self._items.maxlen or 0

    def append(self, item: T) -> None:
        self._items.append(item)

    def items(self) -> tuple[T, ...]:
        """A copy, oldest first."""
        return tuple(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items())


@dataclass(frozen=True)
class Sample:
    """What happened in the ``span`` seconds up to ``at`` (Unix time)."""

    at: float
    span: float
    rows_per_second: float
    """Rows this daemon embedded, every target."""
    target_rows: dict[str, int] = field(default_factory=dict)
    """Rows this daemon embedded in the span, per target."""
    lag_p50: float | None = None
    """Commit-to-vector lag of the rows written in the span (seconds; None: none written)."""
    lag_p99: float | None = None
    queue_depth: int | None = None
    """Rows still to embed, every target (None: the database did not answer)."""
    target_depth: dict[str, int] = field(default_factory=dict)
    api_requests: int = 0
    api_errors: int = 0
    """Failed API requests other than 429s."""
    rate_limited: int = 0
    """429 answers."""
    limit_factor: float = 1.0
    """The lowest rate-limit factor of any provider (below 1: slowed down after 429s)."""
    job_done: dict[int, int] = field(default_factory=dict)
    """Rows done per pending or running job, at ``at``."""
    paused_targets: tuple[str, ...] = ()
    """Targets paused at ``at`` (for any reason)."""

    @property
    def answered(self) -> bool:
        """Whether the database figures (depths, pauses, jobs) were read for this sample."""
        return self.queue_depth is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated inside its bucket as
    Prometheus' ``histogram_quantile`` does; None for an empty histogram."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bucket: its bound is all we know
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
        lower, below = bound, count
    return lower


def lag_buckets() -> list[tuple[float, float]]:
    """The lag histogram's cumulative buckets, every target summed: ``[(upper bound, count)]``
    in bound order, ``+Inf`` last (a quantile over an interval is computed from two readings)."""
    totals: dict[float, float] = {}
    for family in metrics.LAG.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                totals[bound] = totals.get(bound, 0.0) + sample.value
    return sorted(totals.items())


def api_totals() -> tuple[int, int, int]:
    """Embedding API requests so far: ``(all, failed other than 429, answered 429)``."""
    counts = []
    for counter in (metrics.API_REQUESTS, metrics.API_ERRORS, metrics.API_RATE_LIMITED):
        total = 0.0
        for family in counter.collect():
            total += sum(s.value for s in family.samples if s.name.endswith("_total"))
        counts.append(int(total))
    requests, errors, limited = counts
    return requests, errors - limited, limited


def bucket_delta(
    now: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """The histogram's buckets filled between two readings (what one sample's lag is of)."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in now]


class StatsHost(Protocol):
    """What sampling needs of a daemon (``syncsvc.core.host.Host`` has it)."""

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConn]: ...

    @property
    def stop_event(self) -> asyncio.Event: ...

    def snapshot(self) -> HostSnapshot: ...


@dataclass
class _Counters:
    """The cumulative readings a sample is the difference of."""

    clock: float
    embedded: int
    per_target: dict[str, int]
    lag: list[tuple[float, float]]
    api: tuple[int, int, int]


class StatsHistory:
    """The daemon service that samples every ``interval`` seconds into a ring buffer covering
    ``window`` seconds; ``get_stats()`` is what the admin page reads."""

    def __init__(
        self,
        interval: float = 10.0,
        window: float = WINDOW_SECONDS,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"the sampling interval must be positive, not {interval}")
        self.interval = interval
        self.window = window
        self._clock = clock
        self._ring: Ring[Sample] = Ring(max(2, math.ceil(window / interval)))
        self._last: _Counters | None = None

    def get_stats(self) -> tuple[Sample, ...]:
        """The samples of the last window, oldest first (a copy)."""
        return self._ring.items()

    def record(self, sample: Sample) -> None:
        self._ring.append(sample)

    async def run(self, host: StatsHost) -> None:
        """Service: a baseline at once, then a sample every interval until stopped."""
        self._last = self._read(host.snapshot())
        while not host.stop_event.is_set():
            await sleep_unless(host.stop_event, self.interval)
            if host.stop_event.is_set():
                break
            try:
                self.record(await self.sample(host))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a missing sample is a gap in a chart, not a failure
                logger.warning("stats sample failed: %s", exc)

    def _read(self, state: HostSnapshot) -> _Counters:
        return _Counters(
            clock=time.monotonic(),
            embedded=state.embedded,
            per_target=dict(state.embedded_per_target),
            lag=lag_buckets(),
            api=api_totals(),
        )

    async def sample(self, host: StatsHost) -> Sample:
        """One sample: this process' counters since the last one, the database's backlog."""
        state = host.snapshot()
        now = self._read(state)
        last = self._last or now
        self._last = now
        span = max(now.clock - last.clock, 1e-6)
        lag = bucket_delta(now.lag, last.lag)
        requests, errors, limited = (a - b for a, b in zip(now.api, last.api, strict=True))
        depth, per_target, paused, jobs = await self._database(host.pool)
        return Sample(
            at=self._clock(),
            span=span,
            rows_per_second=(now.embedded - last.embedded) / span,
            target_rows={
                name: count - last.per_target.get(name, 0) for name, count in now.per_target.items()
            },
            lag_p50=quantile(0.5, lag),
            lag_p99=quantile(0.99, lag),
            queue_depth=depth,
            target_depth=per_target,
            api_requests=requests,
            api_errors=errors,
            rate_limited=limited,
            limit_factor=min(state.limit_factors.values(), default=1.0),
            job_done=jobs,
            paused_targets=paused,
        )

    async def _database(
        self, pool: AsyncConnectionPool[AsyncConn]
    ) -> tuple[int | None, dict[str, int], tuple[str, ...], dict[int, int]]:
        try:
            async with pool.connection(timeout=5) as conn:
                cur = await conn.execute(sqlfiles.query("status", "queue_depth"))
                rows = await cur.fetchall()
                depth = {r["target"]: int(r["depth"]) for r in rows}
                paused = tuple(r["target"] for r in rows if r["paused"])
                jobs: dict[int, int] = {}
                if await common.relation_oid(conn, "syncsvc", "jobs") is not None:
                    cur = await conn.execute(sqlfiles.query("status", "open_job_progress"))
                    jobs = {r["id"]: int(r["done_rows"]) for r in await cur.fetchall()}
        except (psycopg.Error, PoolTimeout) as exc:
            logger.debug("stats sample without the database: %s", exc)
            return None, {}, (), {}
        return sum(depth.values()), depth, paused, jobs
