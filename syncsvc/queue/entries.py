"""The durable queue: claim under lease, complete, fail with backoff, release."""

from __future__ import annotations

import itertools
import logging
import random
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from syncsvc.core.models import ClaimedItem
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles

LIVE_PRIORITY = 0
"""Queue priority of rows the triggers captured; sweeps (1) and backfills (2) come after."""

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    item: ClaimedItem
    error: str
    permanent: bool
    request_id: str | None = None
    generation_id: int | None = None
    """The generation the row failed in (None: not about one generation)."""


@dataclass(frozen=True)
class RetryStrategy:
    """Exponential backoff with full jitter, capped; attempts beyond ``max_attempts`` fail."""

    max_attempts: int = 6
    base_seconds: float = 2.0
    max_seconds: float = 600.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1-based)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempts - 1))
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


EXPAND_LOCK = 0x73796E63  # "sync": one daemon at a time expands the inbox


async def expand_inbox(pool: AsyncConnectionPool[AsyncConn], batch: int = 100) -> int:
    """Expand inbox rows into queue entries until the inbox is empty (or another daemon is)."""
    touched = 0
    async with pool.connection() as conn:
        # Every wake-up of the claimer comes here, and the inbox is mostly empty: one short
        # autocommit read then, instead of a transaction of four statements. A row captured
        # just after it wakes the claimer again (its NOTIFY comes at commit).
        cur = await conn.execute(_q("inbox_waiting"))
        row = await cur.fetchone()
        if row is None or not row["waiting"]:
            return touched
        while True:
            async with conn.transaction():
                cur = await conn.execute(
                    sqlfiles.query("queue", "try_expand_lock"), {"lock": EXPAND_LOCK}
                )
                row = await cur.fetchone()
                if row is None or not row["locked"]:
                    return touched
                cur = await conn.execute(_q("expand_inbox"), {"limit": batch})
                touched += cur.rowcount
                cur = await conn.execute(_q("inbox_waiting"))
                row = await cur.fetchone()
            if row is None or not row["waiting"]:
                return touched


def _q(name: str) -> sql.SQL:
    return sqlfiles.query("queue", name)


class Queue:
    """Queue operations of one worker identity over a connection pool."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConn],
        worker: str,
        *,
        lease_seconds: float,
        retry: RetryStrategy,
    ) -> None:
        self.pool = pool
        self.worker = worker
        self._rounds = itertools.count(1)
        self.lease_seconds = lease_seconds
        self.retry = retry
        # Read by the lease keeper's thread too (syncsvc/daemon/leases.py), hence the lock.
        self._lock = threading.Lock()
        self._holding: set[str] = set()
        """Holder ids of this daemon's rounds in progress: their leases are renewed."""
        self._ended: set[str] = set()
        """Holder ids of rounds that are over but may have left entries held (a release lost
        with the database connection, a claim whose answer was lost). Only these are given
        back: a round that started after a renewal listed the rounds is never mistaken for
        one, whatever the interleaving."""

    async def expand_inbox(self, batch: int = 100) -> int:
        """Move captured keys into the queue; returns how many queue entries were touched."""
        return await expand_inbox(self.pool, batch)

    async def expire_leases(
        self, grace_seconds: float = 5.0, restart_grace_seconds: float = 15.0
    ) -> int:
        """Free entries of dead holders: daemons with no session connected (claims made before
        a server restart: only once their lease ran out or ``restart_grace_seconds`` passed)."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _q("expire_leases"),
                {"grace_seconds": grace_seconds, "restart_grace_seconds": restart_grace_seconds},
            )
            return cur.rowcount

    async def claim(
        self, target_ids: Sequence[int], limit: int, max_priority: int | None = None
    ) -> list[ClaimedItem]:
        """Lease up to ``limit`` due entries of one priority, the most urgent first."""
        if not target_ids:
            return []
        holder = f"{self.worker}/{next(self._rounds)}"
        # Renewed from before the claim commits.
        with self._lock:
            self._holding.add(holder)
        try:
            async with self.pool.connection() as conn:
                cur = await conn.execute(
                    _q("claim"),
                    {
                        "target_ids": list(target_ids),
                        "limit": limit,
                        "worker": holder,
                        "lease_seconds": self.lease_seconds,
                        "max_priority": max_priority,
                    },
                )
                rows = await cur.fetchall()
        except BaseException:
            # The claim may have committed all the same: give back whatever it took.
            self.done(holder)
            raise
        if not rows:
            with self._lock:
                self._holding.discard(holder)
        return [
            ClaimedItem(
                target_id=r["target_id"],
                pk=r["pk"],
                seq=r["seq"],
                attempts=r["attempts"],
                enqueued_at=r["enqueued_at"],
                priority=r["priority"],
                holder=holder,
            )
            for r in rows
        ]

    def done(self, holder: str) -> None:
        """The round ``holder`` is over (whatever became of its entries)."""
        with self._lock:
            if holder in self._holding:
                self._holding.discard(holder)
                self._ended.add(holder)

    def _renewal(self) -> tuple[dict[str, Any], list[str]]:
        with self._lock:
            holders, ended = sorted(self._holding), sorted(self._ended)
        return {"holders": holders, "lease_seconds": self.lease_seconds}, ended

    def _released(self, ended: list[str], count: int) -> None:
        with self._lock:
            self._ended.difference_update(ended)
        if count:
            logger.info("gave back %d entries of rounds that are over", count)

    def renew_on(self, conn: psycopg.Connection[Any]) -> int:
        """Extend the leases of rounds in progress, give back entries of rounds that are over;
        on ``conn`` (a blocking connection: the lease keeper's thread). Returns leases renewed."""
        params, ended = self._renewal()
        renewed = conn.execute(_q("renew_leases"), params).rowcount
        if ended:
            self._released(ended, conn.execute(_q("release_ended"), {"holders": ended}).rowcount)
        return renewed

    async def renew_leases(self) -> int:
        """``renew_on`` over the pool, for callers without a lease keeper."""
        params, ended = self._renewal()
        async with self.pool.connection() as conn:
            renewed = (await conn.execute(_q("renew_leases"), params)).rowcount
            if ended:
                cur = await conn.execute(_q("release_ended"), {"holders": ended})
                self._released(ended, cur.rowcount)
        return renewed

    async def complete(self, items: Iterable[ClaimedItem], conn: AsyncConn | None = None) -> None:
        """Done with these entries; on ``conn`` (the caller's transaction) when given."""
        items = list(items)
        if not items:
            return
        params = {
            "target_ids": [i.target_id for i in items],
            "pks": [Jsonb(i.pk) for i in items],
            "seqs": [i.seq for i in items],
            "holders": [i.holder for i in items],
        }
        if conn is not None:
            await conn.execute(_q("complete"), params)
            return
        async with self.pool.connection() as own:
            await own.execute(_q("complete"), params)

    async def fail(self, failures: Iterable[Failure]) -> list[tuple[int, list[object], str]]:
        """Record failures; returns (target_id, pk, new state) per entry."""
        failures = list(failures)
        if not failures:
            return []
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                _q("fail"),
                {
                    "target_ids": [f.item.target_id for f in failures],
                    "pks": [Jsonb(f.item.pk) for f in failures],
                    "seqs": [f.item.seq for f in failures],
                    "errors": [f.error[:2000] for f in failures],
                    "request_ids": [f.request_id for f in failures],
                    "permanent": [f.permanent for f in failures],
                    "delays": [self.retry.delay(f.item.attempts + 1) for f in failures],
                    "max_attempts": self.retry.max_attempts,
                    "holders": [f.item.holder for f in failures],
                    "generations": [f.generation_id for f in failures],
                },
            )
            rows = await cur.fetchall()
        return [(r["target_id"], r["pk"], r["state"]) for r in rows]

    async def release(self, items: Iterable[ClaimedItem]) -> None:
        items = list(items)
        if not items:
            return
        async with self.pool.connection() as conn:
            await conn.execute(
                _q("release"),
                {
                    "target_ids": [i.target_id for i in items],
                    "pks": [Jsonb(i.pk) for i in items],
                    "holders": [i.holder for i in items],
                },
            )

    async def release_all(self) -> int:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_q("release_all"), {"worker": self.worker})
            return cur.rowcount
