"""Long work is never quiet: while rows are being embedded the daemon logs, every
``worker.progress_log_seconds``, how many it embedded, at what rate, what is still waiting and
about how long that takes. An idle daemon logs nothing."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import psycopg
from psycopg_pool import PoolTimeout

from syncsvc.core.waiting import sleep_unless
from syncsvc.db import sqlfiles
from syncsvc.observe.status import duration

if TYPE_CHECKING:
    from syncsvc.core.host import Host

logger = logging.getLogger(__name__)


async def progress_service(host: Host) -> None:
    """Service: one progress line per interval in which something was embedded."""
    interval = host.settings.worker.progress_log_seconds
    stats = host.snapshot()
    embedded, per_target, since = stats.embedded, stats.embedded_per_target, time.monotonic()
    while not host.stop_event.is_set():
        await sleep_unless(host.stop_event, interval)
        now = time.monotonic()
        stats = host.snapshot()
        done = stats.embedded - embedded
        if done <= 0 or host.stop_event.is_set():
            continue
        rate = done / max(now - since, 1e-6)
        by_target = ", ".join(
            f"{name} {count - per_target.get(name, 0)}"
            for name, count in sorted(stats.embedded_per_target.items())
            if count > per_target.get(name, 0)
        )
        waiting = await _waiting(host)
        left = (
            "" if waiting is None else f"; {waiting} waiting, about {duration(waiting / rate)} left"
        )
        logger.info(
            "embedded %d rows in %.0fs (%.0f rows/s: %s)%s",
            done,
            now - since,
            rate,
            by_target,
            left,
        )
        embedded, per_target, since = stats.embedded, stats.embedded_per_target, now


async def _waiting(host: Host) -> int | None:
    try:
        async with host.pool.connection(timeout=5) as conn:
            cur = await conn.execute(sqlfiles.query("status", "waiting"))
            row = await cur.fetchone()
    except (psycopg.Error, PoolTimeout):
        return None  # the line is informational: no count is better than no line
    return int(row["n"]) if row else None
