"""Scale-out: N daemons on one database share the API rate budget and elect one scheduler.

The queue is already shared (``FOR UPDATE SKIP LOCKED`` claims under lease). What remains per
process would be wrong with N processes:

- **Rate budget.** RPM/TPM caps belong to the API *account*, not the process. Each daemon's
  ``SharedRateLimiter`` first paces itself locally (``syncsvc.embed.ratelimit``), then reserves
  a slot in ``syncsvc.rate_budget`` with one GCRA ``UPDATE`` and sleeps until that slot, so the
  daemons together stay under the cap. A 429 seen by one daemon pushes the account's next slot
  past ``Retry-After`` for everyone. The database's clock is the only clock involved.
- **Scheduler.** Sweeps are idempotent but cost a scan of every source table; only the daemon
  holding a session advisory lock runs the scheduled sweep. When it dies, its session ends, the
  lock is released, and another daemon takes over within one ``interval``.
- **Visibility.** Every daemon upserts a heartbeat row in ``syncsvc.daemons``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from syncsvc.db import sqlfiles
from syncsvc.embed.ratelimit import SAFETY, RateLimiter
from syncsvc.observe import metrics

if TYPE_CHECKING:
    from syncsvc.core.host import Host
    from syncsvc.core.types import Sweep
from syncsvc.core.waiting import sleep_unless
from syncsvc.embed.provider import ProviderFactory

logger = logging.getLogger(__name__)

SCHEDULER_LOCK = 0x73796E6353434845
"""Advisory lock key of the sweep scheduler ("syncSCHE"); one per database."""
WARN_EVERY = 60.0


def account_key(base_url: str | None, api_key: str | None) -> str:
    """Identify an API account without revealing its key: host plus a short key fingerprint."""
    host = metrics.endpoint(base_url or "")
    if not api_key:
        return host
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()[:8]
    return f"{host}/{fingerprint}"


class BudgetStore:
    """Reservations in ``syncsvc.rate_budget`` over one dedicated, self-healing connection.

    If the database cannot be reached the reservation is skipped (local pacing still applies)
    rather than failing the embedding request: the queue would retry it anyway.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()
        self._warned = 0.0
        self._tasks: set[asyncio.Task[dict[str, Any] | None]] = set()

    async def _execute(self, name: str, params: dict[str, Any]) -> dict[str, Any] | None:
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, row_factory=dict_row, connect_timeout=5
                    )
                cur = await self._conn.execute(sqlfiles.query("ops", name), params)
                return await cur.fetchone() if cur.description else None
            except psycopg.Error as exc:
                await self._drop()
                if time.monotonic() - self._warned > WARN_EVERY:
                    self._warned = time.monotonic()
                    logger.warning("shared rate budget unavailable (%s); pacing locally", exc)
                return None

    async def reserve(
        self, account: str, rpm: int | None, tpm: int | None, request_cost: float, token_cost: float
    ) -> float:
        """Book the next slot; returns the seconds to wait before sending."""
        row = await self._execute(
            "reserve",
            {
                "account": account,
                "rpm": rpm,
                "tpm": tpm,
                "request_cost": request_cost,
                "token_cost": token_cost,
            },
        )
        return float(row["wait_seconds"]) if row else 0.0

    def throttle_soon(self, account: str, pause: float) -> None:
        """Tell every daemon about a 429 (from a sync callback: runs as a task)."""
        task = asyncio.get_running_loop().create_task(
            self._execute("throttle", {"account": account, "pause": pause})
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        self._conn = None

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._lock:
            await self._drop()


class SharedRateLimiter(RateLimiter):
    """A ``RateLimiter`` that also reserves each request in the account's shared budget."""

    def __init__(self, store: BudgetStore, account: str, rpm: int | None, tpm: int | None) -> None:
        super().__init__(rpm, tpm)
        self.store = store
        self.account = account

    async def acquire(self, tokens: int, priority: int = 0, tenant: Hashable = None) -> None:
        await super().acquire(tokens, priority, tenant)
        factor = self.stats().factor
        request_cost = 60.0 / (self.rpm * SAFETY * factor) if self.rpm else 0.0
        token_cost = 60.0 * tokens / (self.tpm * SAFETY * factor) if self.tpm else 0.0
        wait = await self.store.reserve(self.account, self.rpm, self.tpm, request_cost, token_cost)
        if wait > 0:
            metrics.record_budget_wait(self.account, wait)
            await asyncio.sleep(wait)

    def on_rate_limited(self, retry_after: float | None) -> float:
        pause = super().on_rate_limited(retry_after)
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to share it with
            self.store.throttle_soon(self.account, pause)
        return pause


def share_budget(provider: object, store: BudgetStore) -> bool:
    """Swap a provider's per-process limiter for a shared one; False if it has no budget."""
    http = getattr(provider, "http", None)
    limiter = getattr(http, "limiter", None)
    if not isinstance(limiter, RateLimiter) or isinstance(limiter, SharedRateLimiter):
        return False
    if not (limiter.rpm or limiter.tpm):
        return False
    profile = getattr(provider, "profile", None)
    key_env = getattr(profile, "api_key_env", None)
    api_key = os.environ.get(key_env) if key_env else None
    account = account_key(getattr(http, "base_url", None), api_key)
    http.limiter = SharedRateLimiter(store, account, limiter.rpm, limiter.tpm)  # type: ignore[union-attr]
    logger.info("provider %s shares the rate budget of account %s", provider, account)
    return True


class Coordinator:
    """Leader election for the sweep scheduler, heartbeats, and the shared rate budget."""

    def __init__(self, url: str, daemon_id: str, *, interval: float = 5.0) -> None:
        self.url = url
        self.daemon_id = daemon_id
        self.interval = interval
        self.store = BudgetStore(url)
        self.is_leader = False
        self._conn: psycopg.AsyncConnection[dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def check_leadership(self) -> bool:
        """Hold (or try to take) the scheduler lock; False when the database is unreachable."""
        async with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self.is_leader = False
                    self._conn = await psycopg.AsyncConnection.connect(
                        self.url, autocommit=True, row_factory=dict_row, connect_timeout=5
                    )
                if self.is_leader:
                    # The lock lives as long as this session: proving the session proves it.
                    await self._conn.execute(sqlfiles.query("ops", "ping"))
                else:
                    cur = await self._conn.execute(
                        sqlfiles.query("ops", "try_lead"), {"key": SCHEDULER_LOCK}
                    )
                    row = await cur.fetchone()
                    self.is_leader = bool(row and row["leader"])
                    if self.is_leader:
                        logger.info("daemon %s now runs the sweep scheduler", self.daemon_id)
            except psycopg.Error as exc:
                if self.is_leader:
                    logger.warning("lost the scheduler lock: %s", exc)
                else:
                    logger.debug("scheduler election failed: %s", exc)
                self.is_leader = False
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
        metrics.LEADER.set(1 if self.is_leader else 0)
        return self.is_leader

    def gate(self, sweep: Sweep) -> Sweep:
        """Wrap the daemon's sweep (of every target, or of one) so that only the leader runs
        it; the leader got the same notification and sweeps that target itself."""

        async def leader_sweep(target_id: int | None = None) -> int:
            if await self.check_leadership():
                return await sweep(target_id)
            return 0

        return leader_sweep

    def shared(self, build: ProviderFactory) -> ProviderFactory:
        """Wrap a provider factory: every provider it builds shares its account's budget."""

        def factory(name: str) -> Any:
            provider = build(name)
            share_budget(provider, self.store)
            return provider

        return factory

    async def run(self, host: Host) -> None:
        """Service: heartbeat and leadership every ``interval`` until the daemon stops."""
        hostname, pid = socket.gethostname(), os.getpid()
        was_leader = self.is_leader  # whether the start-up sweep ran here
        takeovers: set[asyncio.Task[int]] = set()
        try:
            while not host.stop_event.is_set():
                metrics.HEARTBEAT.set(time.time())
                leader = await self.check_leadership()
                if leader and not was_leader:
                    # The previous leader may have died mid-sweep: what it had not enqueued
                    # yet must not wait for the next scheduled sweep.
                    task = asyncio.create_task(host.sweep(), name="syncsvc-takeover-sweep")
                    takeovers.add(task)
                    task.add_done_callback(_takeover_done(takeovers))
                was_leader = leader
                try:
                    async with host.pool.connection(timeout=self.interval) as conn:
                        await conn.execute(
                            sqlfiles.query("ops", "heartbeat"),
                            {"id": host.id, "host": hostname, "pid": pid, "leader": leader},
                        )
                except Exception as exc:  # the database being away must not stop the daemon
                    logger.debug("heartbeat failed: %s", exc)
                await sleep_unless(host.stop_event, self.interval)
        finally:
            for task in list(takeovers):
                task.cancel()
            with contextlib.suppress(Exception):
                async with host.pool.connection(timeout=2) as conn:
                    await conn.execute(sqlfiles.query("ops", "forget_daemon"), {"id": host.id})
            await self.aclose()

    async def aclose(self) -> None:
        await self.store.aclose()
        async with self._lock:
            if self._conn is not None:
                with contextlib.suppress(Exception):
                    await self._conn.close()
            self._conn = None
            self.is_leader = False
        metrics.LEADER.set(0)


def _takeover_done(tasks: set[asyncio.Task[int]]) -> Callable[[asyncio.Task[int]], None]:
    def done(task: asyncio.Task[int]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # The scheduled sweep runs later anyway; say why this one did not.
            logger.warning("the sweep after taking over the scheduler failed: %r", task.exception())

    return done
