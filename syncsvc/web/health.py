"""Liveness and readiness for orchestrators.

``/healthz`` only proves the process answers. ``/readyz`` proves the daemon can do its job:
the database answers, the LISTEN connection is up, no target is paused because its provider
refused requests, and the daemon is not shutting down. Each check is bounded by a timeout so a
hung database makes the probe fail fast instead of hanging the kubelet.

The daemon runs the same checks on a timer (``health_service``), so ``syncsvc_ready`` and the
daemon's gauges are true whether or not anything requests ``/readyz``: an alert on them must
not depend on a probe being configured.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from psycopg_pool import AsyncConnectionPool

from syncsvc.core.types import AsyncConn
from syncsvc.core.waiting import sleep_unless
from syncsvc.db import sqlfiles
from syncsvc.observe import metrics

if TYPE_CHECKING:
    from syncsvc.core.host import Host

logger = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
HEALTH_INTERVAL = 5.0
"""Seconds between the daemon's own readiness checks (well under a scrape interval)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str = ""


async def _database(pool: AsyncConnectionPool[AsyncConn]) -> tuple[Check, list[str]]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            async with pool.connection(timeout=CHECK_TIMEOUT) as conn:
                await conn.execute(sqlfiles.query("ops", "ping"))
                cur = await conn.execute(sqlfiles.query("ops", "paused_targets"))
                paused = [f"{r['name']}: {r['paused_reason']}" for r in await cur.fetchall()]
    except Exception as exc:  # any failure means "not ready"; the detail says which
        return Check("database", False, f"{type(exc).__name__}: {exc}"[:300]), []
    return Check("database", True), paused


async def readiness(pool: AsyncConnectionPool[AsyncConn], host: Host | None = None) -> list[Check]:
    """Every readiness check with its outcome; ready means all are ok."""
    database, paused = await _database(pool)
    checks = [database]
    if database.ok:
        checks.append(Check("provider", not paused, "; ".join(paused)[:500]))
    state = host.snapshot() if host is not None else None
    if state is not None:
        connected = state.listener_connected
        checks.append(Check("listener", connected, "" if connected else "LISTEN connection down"))
        stopping = state.stopping
        checks.append(Check("running", not stopping, "shutting down" if stopping else ""))
        # Informational: the daemon keeps going (and retries), but says what keeps failing.
        checks.append(Check("errors", True, "; ".join(state.recent_errors)[:500]))
    ready = all(c.ok for c in checks)
    metrics.READY.set(1 if ready else 0)
    if state is not None:
        metrics.LISTENER_CONNECTED.set(1 if state.listener_connected else 0)
    return checks


async def health_service(host: Host) -> None:
    """Daemon service: run the readiness checks and set the daemon's gauges every
    ``HEALTH_INTERVAL`` seconds, the first time at once."""
    while not host.stop_event.is_set():
        try:
            await readiness(host.pool, host)
            metrics.refresh_daemon(host)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the gauges wait for the next tick; the daemon goes on
            logger.warning("health check failed: %s", exc)
        await sleep_unless(host.stop_event, HEALTH_INTERVAL)
