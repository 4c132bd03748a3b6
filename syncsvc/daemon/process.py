"""``syncsvc run``: the long-running process that keeps every target's vectors current.

One stop event; signal handlers only set it. Every background task is named and supervised:
if one dies, the daemon stops loudly instead of limping on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid

import psycopg
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from psycopg_pool import PoolTimeout

from syncsvc.capture import partitions, reconcile
from syncsvc.core.errors import SyncsvcError
from syncsvc.core.host import Host, HostSnapshot, Service
from syncsvc.core.models import Generation
from syncsvc.core.settings import Settings
from syncsvc.core.types import RoundHook, RoundStats, Sweep, SweepGate
from syncsvc.core.waiting import sleep_unless
from syncsvc.daemon import actions, probe
from syncsvc.daemon.leases import LeaseKeeper
from syncsvc.daemon.rounds import Rounds
from syncsvc.daemon.schedule import ScheduledRunner
from syncsvc.daemon.worker import Worker
from syncsvc.db import sqlfiles
from syncsvc.db.catalog import running_target_ids
from syncsvc.db.database import create_pool
from syncsvc.db.listener import Listener
from syncsvc.db.statements import QUEUE_CHANNEL, TARGETS_CHANNEL
from syncsvc.embed.embedder import Embedder
from syncsvc.embed.provider import ProviderFactory
from syncsvc.jobs import backfill
from syncsvc.observe import progress
from syncsvc.observe.errorlog import RepeatedErrors
from syncsvc.providers.registry import build_provider, publish_models
from syncsvc.queue.entries import Queue, RetryStrategy
from syncsvc.search import queries
from syncsvc.store import indexes

logger = logging.getLogger(__name__)


class DaemonTaskDied(RuntimeError):
    """A supervised background task ended unexpectedly."""


def _died(task: asyncio.Task[None], stop: asyncio.Event) -> bool:
    """A task that ends with an error, or on its own before a stop was asked, has died."""
    if task.cancelled():
        return not stop.is_set()
    return task.exception() is not None or not stop.is_set()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def liveness_tag(daemon_id: str) -> str:
    """The part of a daemon id its sessions announce (sql/queue.sql expire_leases reads it)."""
    return daemon_id.rpartition(":")[2]


class Daemon:
    """Claims work, embeds it, sweeps on a schedule, and shuts down gracefully."""

    def __init__(
        self,
        settings: Settings,
        url: str,
        *,
        worker: Worker | None = None,
        provider_factory: ProviderFactory | None = None,
    ) -> None:
        self.settings = settings
        self.url = url
        self.id = worker_id()
        self.stop_event = asyncio.Event()
        self.wake = asyncio.Event()
        self.stats = RoundStats()
        self.errors = RepeatedErrors()
        self.hooks: list[RoundHook] = []
        self.services: dict[str, Service] = {}
        conf = settings.worker
        # A connection per round (and the live-edit round), plus the claimer, jobs and indexes.
        # The application name is this daemon's liveness: while one of its sessions is
        # connected its claims are its own; once none is, other daemons take them at once.
        application_name = f"syncsvc {liveness_tag(self.id)}"
        self.pool = create_pool(
            url,
            min_size=2,
            max_size=conf.rounds_in_flight + 5,
            application_name=application_name,
        )
        self.queue = Queue(
            self.pool,
            self.id,
            lease_seconds=conf.lease_seconds,
            retry=RetryStrategy(
                max_attempts=conf.max_attempts,
                base_seconds=conf.backoff_base_seconds,
                max_seconds=conf.backoff_max_seconds,
            ),
        )
        # Renewals and the liveness session on a thread and connection of their own: a busy
        # event loop must never make this daemon's claims look abandoned.
        self.lease_keeper = LeaseKeeper(
            url,
            self.queue,
            application_name=application_name,
            interval=min(conf.lease_seconds / 3, 5.0),
        )
        factory = provider_factory or (lambda name: build_provider(name, settings))
        self.worker = worker or Worker(self.pool, self.queue, factory, settings.worker)
        self.listener = Listener(
            url,
            self.wake,
            self.stop_event,
            channels=(
                QUEUE_CHANNEL,
                TARGETS_CHANNEL,
                queries.QUERIES_CHANNEL,
                actions.REQUESTS_CHANNEL,
            ),
        )
        self.rounds = Rounds(
            self.queue,
            self.worker,
            conf,
            wake=self.wake,
            stop_event=self.stop_event,
            errors=self.errors,
            stats=self.stats,
            hooks=self.hooks,
        )
        self._sweep_gate: SweepGate | None = None
        self.scheduler = AsyncIOScheduler()
        self.started = asyncio.Event()
        self.add_service("indexes", indexes.index_service)
        self.add_service("jobs", backfill.run)
        self.add_service("probe", self._probe)
        self.add_service("progress", progress.progress_service)
        self.schedules = ScheduledRunner(self, self.scheduler, self.sweep_now)

    def embedder_for(self, generation: Generation) -> Embedder:
        """The embedder rounds use for ``generation`` (its provider, budget and limits)."""
        return self.worker.embedder(generation)

    async def _probe(self, host: Host) -> None:
        # The probe embeds through this daemon's embedders: more than a Host offers.
        await probe.probe_service(self)

    def gate_sweep(self, gate: SweepGate) -> None:
        """Route ``sweep`` through ``gate`` (e.g. only the scheduler leader sweeps); the
        schedule's claimed sweeps and ``sweep_now`` bypass it."""
        self._sweep_gate = gate

    def snapshot(self) -> HostSnapshot:
        """The state other services may read (metrics, readiness, progress)."""
        return HostSnapshot(
            rounds_in_flight=self.rounds.in_flight,
            listener_connected=self.listener.connected,
            stopping=self.stop_event.is_set(),
            limit_factors=self.worker.limit_factors(),
            recent_errors=tuple(self.errors.recent()),
            embedded=self.stats.embedded,
            embedded_per_target=dict(self.stats.per_target),
        )

    def add_service(self, name: str, service: Service) -> None:
        """Run ``service(host)`` as a supervised task named ``syncsvc-<name>``.

        A service must run until ``stop_event`` is set; returning early or raising stops the
        daemon, like any other background task.
        """
        self.services[name] = service

    def request_stop(self) -> None:
        """Ask the daemon to stop; safe from signal handlers."""
        self.stop_event.set()
        self.wake.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    async def run(self) -> None:
        """Run until stopped; re-raises the failure of any background task."""
        await self.pool.open(wait=True)
        self.lease_keeper.start()
        try:
            async with self.pool.connection() as conn:
                # SQL callers are validated against what this daemon will embed with.
                await publish_models(conn, self.settings)
            await self._resume_paused_targets()
            await self.carry_out_requests()
            tasks = [
                asyncio.create_task(self.listener.run(), name="syncsvc-listener"),
                asyncio.create_task(self._claim_loop(), name="syncsvc-claimer"),
                asyncio.create_task(self._lease_loop(), name="syncsvc-leases"),
                asyncio.create_task(self._notifications(), name="syncsvc-notifications"),
            ]
            try:
                # The claimer already runs: the first rows are embedded while the start-up
                # sweep still reads the rest (each chunk commits and wakes it).
                await self.sweep()
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            self._schedule()
            tasks += [
                asyncio.create_task(service(self), name=f"syncsvc-{name}")
                for name, service in self.services.items()
            ]
            self.started.set()
            logger.info("daemon %s started", self.id)
            stopper = asyncio.create_task(self._wait_stop(), name="syncsvc-stop")
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            failure = next(
                (t for t in done if t is not stopper and _died(t, self.stop_event)), None
            )
            self.request_stop()
            await self._shutdown([*tasks, stopper])
            if failure is not None:
                exc = failure.exception() if not failure.cancelled() else None
                raise DaemonTaskDied(f"background task {failure.get_name()} died: {exc!r}") from exc
        finally:
            await self.worker.aclose()
            await asyncio.to_thread(self.lease_keeper.stop)
            await self.pool.close()
            logger.info("daemon %s stopped", self.id)

    async def _wait_stop(self) -> None:
        await self.stop_event.wait()

    async def _shutdown(self, tasks: list[asyncio.Task[None]]) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        timeout = self.settings.worker.shutdown_timeout_seconds
        await self.rounds.finish(timeout)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        released = await self.queue.release_all()
        if released:
            logger.info("released %d unfinished entries for other daemons", released)

    async def _resume_paused_targets(self) -> None:
        # A restart is how operators say "I fixed the key": try again.
        async with self.pool.connection() as conn:
            cur = await conn.execute(sqlfiles.query("catalog", "resume_targets"))
            for row in await cur.fetchall():
                logger.info("resuming paused target %s", row["name"])

    def _schedule(self) -> None:
        self.schedules.install()
        self.scheduler.start()

    async def sweep(self, target_id: int | None = None) -> int:
        """``sweep_now`` through the sweep gate, if one is installed (``gate_sweep``)."""
        if self._sweep_gate is None:
            return await self.sweep_now(target_id)
        gated: Sweep = self._sweep_gate(self.sweep_now)
        return await gated(target_id)

    async def sweep_now(self, target_id: int | None = None) -> int:
        """Enqueue missing or stale rows of every running target (or one); returns how many.

        A target whose table is gone or changed shape, or whose definition cannot be turned
        into SQL, is paused with the cause; the others are swept all the same.
        """
        async with self.pool.connection() as conn:
            enqueued = await reconcile.sweep_targets(
                conn,
                target_id=target_id,
                chunk_rows=self.settings.worker.sweep_chunk_rows,
                on_chunk=self.wake.set,
            )
        if enqueued:
            self.wake.set()
        return enqueued

    async def _notifications(self) -> None:
        """React at once to what NOTIFY announces: a new or resumed target is swept, a capture
        error pauses its target, a text query from SQL is embedded (queue wake-ups are the
        claimer's; their payloads are dropped here)."""
        interval = min(self.settings.worker.lease_seconds / 3, 5.0)
        polled = time.monotonic()
        while not self.stop_event.is_set():
            try:
                channel, payload = await asyncio.wait_for(self.listener.payloads.get(), interval)
            except TimeoutError:
                channel, payload = "", ""
            try:
                if time.monotonic() - polled >= interval:
                    # NOTIFY only wakes: a lost one costs seconds. Polled here, not on the
                    # lease loop, so a slow query or request never delays lease renewals.
                    polled = time.monotonic()
                    await queries.prune(
                        self.pool, self.settings.search.query_text_retention_seconds
                    )
                    await self.reconcile_partitions()
                    await self.answer_queries()
                    await self.carry_out_requests()
                if not channel:
                    continue
                if channel == queries.QUERIES_CHANNEL:
                    await self.answer_queries()
                elif channel == actions.REQUESTS_CHANNEL:
                    await self.carry_out_requests()
                elif channel == TARGETS_CHANNEL and payload.isdigit():
                    enqueued = await self.sweep(int(payload))
                    logger.info("target %s changed: %d rows to embed", payload, enqueued)
                    self.wake.set()
            except (psycopg.Error, PoolTimeout, SyncsvcError) as exc:
                # The periodic sweep and poll try again; one target's trouble must not stop
                # the daemon.
                self.errors.report("reacting to %s %s failed", channel, payload, exc=exc)

    async def reconcile_partitions(self) -> int:
        """Capture partitions created or attached since the last poll and sweep them; drop the
        capture of detached ones and remove their vectors (``syncsvc.capture.partitions``)."""
        async with self.pool.connection() as conn:
            return await partitions.reconcile(
                conn, chunk_rows=self.settings.worker.sweep_chunk_rows, on_chunk=self.wake.set
            )

    async def carry_out_requests(self) -> int:
        """Carry out what SQL callers asked for (``syncsvc.add_target``, ``promote`` ...)."""
        async with self.pool.connection() as conn:
            return await actions.carry_out(conn, self.settings)

    async def answer_queries(self) -> int:
        """Embed the text queries psql users are waiting for (``syncsvc.embed_query``)."""
        return await queries.embed_pending(
            self.pool,
            self.worker.provider,
            text_retention_seconds=self.settings.search.query_text_retention_seconds,
        )

    async def _active_target_ids(self) -> list[int]:
        async with self.pool.connection() as conn:
            return await running_target_ids(conn)

    async def _claim_loop(self) -> None:
        backoff = 0.5
        while not self.stop_event.is_set():
            try:
                await self._claim_rounds()
                backoff = 0.5
            except (psycopg.OperationalError, PoolTimeout) as exc:
                # A database restart or failover must not kill the daemon: wait and retry.
                self.errors.report("database unavailable; retrying", exc=exc)
                await self._sleep(backoff)
                # Capped low: work resumes within seconds of the database coming back.
                backoff = min(5.0, backoff * 2)
                continue
            # Woken by a notification, a finished round (a slot is free) or a stop; the poll
            # interval catches retries coming due and anything a lost notification missed.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.settings.worker.poll_interval_seconds)

    async def _sleep(self, seconds: float) -> None:
        await sleep_unless(self.stop_event, seconds)

    async def _claim_rounds(self) -> None:
        """Claim and start rounds until the queue has nothing due or every round slot is busy.

        The inbox is expanded on every call (every wake-up), not only when the queue runs dry:
        a live edit must reach the queue while a long backfill keeps it full.
        """
        self.wake.clear()
        await self.queue.expand_inbox()
        await self.queue.expire_leases()
        await self.rounds.claim(await self._active_target_ids())

    async def _lease_loop(self) -> None:
        # Leases are renewed by the lease keeper's thread; this task watches it and takes over
        # the claims of dead daemons. Often enough that a dead daemon's claims, or entries
        # orphaned by a lost connection, go back within seconds.
        interval = self.lease_keeper.interval
        while not self.stop_event.is_set():
            await self._sleep(interval)
            self.lease_keeper.check()
            try:
                if await self.queue.expire_leases():
                    self.wake.set()
            except (psycopg.OperationalError, PoolTimeout) as exc:
                self.errors.report("could not take over dead daemons' claims; will retry", exc=exc)
