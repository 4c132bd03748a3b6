"""One round of work: claimed queue entries in, vectors (or recorded failures) out.

The HTTP calls happen outside any transaction: read the rows (short), embed (no locks held),
write guarded by the content hash (short), then complete the queue entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Hashable, Sequence

import psycopg
from psycopg_pool import AsyncConnectionPool

from syncsvc.capture import drift
from syncsvc.core import logs
from syncsvc.core.errors import SyncsvcError
from syncsvc.core.models import (
    PROVIDER_PAUSE,
    ClaimedItem,
    Generation,
    GenerationState,
    Target,
    content_hash,
)
from syncsvc.core.settings import WorkerSettings
from syncsvc.core.types import AsyncConn, RoundStats
from syncsvc.db import sqlfiles
from syncsvc.db.catalog import load_targets
from syncsvc.embed.chunking import Chunking
from syncsvc.embed.embedder import Embedder
from syncsvc.embed.items import EmbedFailure, EmbedInput, EmbedSpec, Outcome, ProviderPaused, gather
from syncsvc.embed.provider import EmbeddingProvider, ProviderFactory, ProviderWrapper, Withdrawn
from syncsvc.observe import metrics
from syncsvc.queue.entries import LIVE_PRIORITY, Failure, Queue
from syncsvc.queue.settlement import Settlement
from syncsvc.store import vectors

logger = logging.getLogger(__name__)


class Worker:
    """Processes claimed entries of any target; providers and embedders are created lazily."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConn],
        queue: Queue,
        provider_factory: ProviderFactory,
        settings: WorkerSettings | None = None,
    ) -> None:
        self.pool = pool
        self.queue = queue
        # How long a backfill's returned vectors may wait for more to share their write, and
        # the rows that end the wait (WorkerSettings.write_linger_*); none without settings.
        self.linger_seconds = settings.write_linger_seconds if settings else 0.0
        self.linger_rows = settings.write_linger_rows if settings else 1
        self._provider_factory = provider_factory
        self._providers: dict[str, EmbeddingProvider] = {}
        self._embedders: dict[int, Embedder] = {}
        self._promoted: set[int] = set()
        """Generations seen active: they can no longer be cancelled, so need no check."""

    def wrap_provider_factory(self, wrap: ProviderWrapper) -> None:
        """Build the providers not built yet through ``wrap(factory)`` (e.g. shared budgets)."""
        self._provider_factory = wrap(self._provider_factory)

    def limit_factors(self) -> dict[str, float]:
        """Per provider built so far, its rate limiter's current factor (if it has one)."""
        factors: dict[str, float] = {}
        for name, provider in list(self._providers.items()):
            limiter = getattr(provider, "limiter", None)
            stats = getattr(limiter, "stats", None)
            if callable(stats):
                factors[name] = float(stats().factor)
        return factors

    def provider(self, name: str) -> EmbeddingProvider:
        if name not in self._providers:
            self._providers[name] = self._provider_factory(name)
        return self._providers[name]

    def embedder(self, generation: Generation) -> Embedder:
        if generation.id not in self._embedders:
            spec = EmbedSpec(
                model=generation.model,
                dimensions=generation.dimensions,
                sparse=generation.sparse,
                chunking=Chunking.from_options(generation.options),
            )
            self._embedders[generation.id] = Embedder(
                self.provider(generation.provider),
                spec,
                proceed=lambda: self._still_live(generation.id),
            )
        return self._embedders[generation.id]

    async def _state(self, conn: AsyncConn, generation_id: int, *, lock: bool) -> str | None:
        cur = await conn.execute(
            sqlfiles.query("jobs", "generation_state_lock" if lock else "generation_state"),
            {"id": generation_id},
        )
        row = await cur.fetchone()
        return None if row is None else str(row["state"])

    async def _still_live(self, generation_id: int) -> None:
        """Raise ``Withdrawn`` unless the generation still wants vectors: a request claimed
        for a job that was cancelled (or a generation dropped) while it waited is not sent."""
        if generation_id in self._promoted:
            return
        async with self.pool.connection() as conn:
            state = await self._state(conn, generation_id, lock=False)
        if state == GenerationState.ACTIVE.value:
            self._promoted.add(generation_id)
        elif state != GenerationState.BUILDING.value:
            raise Withdrawn(f"generation {generation_id} is {state or 'gone'}")

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()

    async def targets(self) -> dict[int, Target]:
        async with self.pool.connection() as conn:
            return {t.id: t for t in await load_targets(conn)}

    async def process(self, items: Sequence[ClaimedItem]) -> RoundStats:
        """Embed and store the claimed entries; every entry ends completed, failed or released."""
        stats = RoundStats(claimed=len(items))
        targets = await self.targets()
        # A generation seen active skips the state check before each request and write; one
        # retired since (then maybe reused by a re-embed, and cancelled) is checked again.
        self._promoted &= {
            g.id
            for t in targets.values()
            for g in t.generations
            if g.state is GenerationState.ACTIVE
        }
        by_target: dict[int, list[ClaimedItem]] = defaultdict(list)
        for item in items:
            by_target[item.target_id].append(item)
        # Targets side by side: a round's rows of one target never wait for another's (the
        # claim interleaves targets; the provider's slots take turns between them).
        for target_stats in await gather(
            [
                self._process_guarded(targets[target_id], target_items)
                for target_id, target_items in by_target.items()
                # A target removed meanwhile: its entries went with it.
                if target_id in targets
            ]
        ):
            stats.add(target_stats)
        return stats

    async def _process_guarded(self, target: Target, items: list[ClaimedItem]) -> RoundStats:
        """One target's share of a round; a fault of the target pauses it alone."""
        stats = RoundStats()
        try:
            stats.add(await self._process_target(target, items))
        except ProviderPaused as paused:
            await self._pause(target, f"{PROVIDER_PAUSE}{paused.error}")
            await self.queue.release(items)
            stats.released += len(items)
        except SyncsvcError as exc:
            # E.g. a provider this daemon has no settings for: only this target stops.
            await self._pause_faulty(target, items, str(exc), stats)
        except psycopg.OperationalError:
            raise  # the database's trouble, not this target's: the round gives all back
        except psycopg.Error as exc:
            if not drift.is_target_fault(exc):
                await self._retry_later(target, items, exc, stats)
                return stats
            async with self.pool.connection() as conn:
                reason = await drift.diagnose(conn, target, exc)
            await self._pause_faulty(target, items, reason, stats)
        except Exception as exc:
            # Anything else (a reply the write cannot take, a bug) stays with this target: its
            # entries are retried with a backoff and end failed, visibly, if it persists; the
            # other targets' requests of the round go on.
            await self._retry_later(target, items, exc, stats)
        return stats

    async def _retry_later(
        self, target: Target, items: list[ClaimedItem], exc: Exception, stats: RoundStats
    ) -> None:
        error = f"{type(exc).__name__}: {exc}"
        logger.warning("target %s: round of %d rows failed: %s", target.name, len(items), error)
        await self.queue.fail(Failure(item, error, permanent=False) for item in items)
        stats.released += len(items)

    async def _pause_faulty(
        self, target: Target, items: list[ClaimedItem], reason: str, stats: RoundStats
    ) -> None:
        """Pause the target, and keep its entries queued with the error and a backoff."""
        await self._pause(target, reason)
        await self.queue.fail(Failure(item, reason, permanent=False) for item in items)
        stats.released += len(items)

    async def _pause(self, target: Target, reason: str) -> None:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                sqlfiles.query("catalog", "pause_target"), {"id": target.id, "reason": reason}
            )
        # Rounds in flight all meet the same refusal; only the one that paused the target says
        # so (the statement skips a target already paused for this reason).
        if cur.rowcount:
            logger.error("pausing target %s: %s", target.name, reason)

    async def _process_target(self, target: Target, items: list[ClaimedItem]) -> RoundStats:
        stats = RoundStats()
        logs.bind(target=target.name, generation=None)
        generations = target.live_generations
        async with self.pool.connection() as conn:
            rows = await vectors.read_rows(conn, target, generations, [i.pk for i in items])
        item_by_pk = {_key(i.pk): i for i in items}
        absent: list[ClaimedItem] = []
        # generation id → embedding work for it
        work: dict[int, list[tuple[ClaimedItem, str, bytes]]] = defaultdict(list)
        for row in rows:
            item = item_by_pk[_key(row.pk)]
            if row.input is None:
                absent.append(item)
                continue
            for generation in generations:
                digest = content_hash(generation.key, row.input)
                if row.stored_hashes[generation.id] != digest:
                    work[generation.id].append((item, row.input, digest))
        if absent:
            async with self.pool.connection() as conn:
                await vectors.delete_absent(conn, target, generations, [i.pk for i in absent])
            stats.removed += len(absent)

        failures: dict[Hashable, Failure] = {}
        # A row is done once every generation it needs has its vector: completed then, as its
        # requests return, so a crash re-pays only the requests in flight.
        settlement = Settlement(item_by_pk, failures)
        for todo in work.values():
            settlement.expect(_key(item.pk) for item, _, _ in todo)

        # Generations are embedded side by side: during a re-embed a live edit's vector for
        # the active generation need not wait for the one being built (nor the reverse).
        embeds = [
            self._embed_generation(target, g, work[g.id], item_by_pk, settlement)
            for g in generations
            if work.get(g.id)
        ]
        for generation_stats in await gather(embeds):
            stats.add(generation_stats)

        embedded_any = {_key(item.pk) for todo in work.values() for item, _, _ in todo}
        stats.unchanged += sum(
            1 for i in items if _key(i.pk) not in embedded_any and i not in absent
        )
        if failures:
            await self.queue.fail(failures.values())
            stats.failed += len(failures)
            for failure in failures.values():
                logger.warning(
                    "target %s row %s failed: %s",
                    target.name,
                    failure.item.pk,
                    failure.error,
                    extra={"request_id": failure.request_id},
                )
        await self.queue.complete(
            i
            for i in items
            if _key(i.pk) not in failures and _key(i.pk) not in settlement.completed
        )
        return stats

    async def _embed_generation(
        self,
        target: Target,
        generation: Generation,
        todo: list[tuple[ClaimedItem, str, bytes]],
        item_by_pk: dict[Hashable, ClaimedItem],
        settlement: Settlement,
    ) -> RoundStats:
        """Embed one generation's share of a round, writing each request's vectors (and
        settling its rows) as the request returns."""
        stats = RoundStats()
        logs.bind(generation=generation.id)
        digests = {_key(item.pk): (item, digest) for item, _, digest in todo}
        price = metrics.price_per_million(
            self.provider(generation.provider).profile, generation.model
        )

        ready: dict[Hashable, Outcome] = {}
        writing = asyncio.Lock()
        arrived: set[Hashable] = set()
        enough = asyncio.Event()
        # Live edits are written the moment they return; a backfill's replies may wait a
        # little for the next ones, so that one transaction carries several requests' rows
        # instead of one each (its fixed cost is most of a 10-row write's CPU).
        linger = self.linger_seconds
        if min(item.priority for item, _, _ in todo) <= LIVE_PRIORITY:
            linger = 0.0

        def full() -> bool:
            # Enough rows to write, or nothing more to wait for in this round.
            return len(ready) >= self.linger_rows or len(arrived) >= len(digests)

        async def group(outcomes: dict[Hashable, Outcome]) -> None:
            # Group commit: responses that return while a write runs (or lingers) go in the
            # same write, so a slow database gets fewer, larger writes instead of a growing
            # line of them.
            ready.update(outcomes)
            arrived.update(outcomes)
            if full():
                enough.set()
            async with writing:
                if ready and linger > 0 and not full():
                    enough.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(linger):
                            await enough.wait()
                if ready:
                    batch = dict(ready)
                    ready.clear()
                    await store(batch)

        async def store(outcomes: dict[Hashable, Outcome]) -> None:
            writes = []
            billed = 0
            for key, outcome in outcomes.items():
                item, digest = digests[key]
                if isinstance(outcome, EmbedFailure):
                    # Recorded before the rows settle: a failed row is never completed.
                    settlement.failures.setdefault(
                        key,
                        Failure(
                            item,
                            outcome.message,
                            outcome.permanent,
                            outcome.request_id,
                            generation_id=generation.id,
                        ),
                    )
                    continue
                writes.append(
                    vectors.VectorWrite(
                        pk=item.pk,
                        content_hash=digest,
                        vectors=outcome.vectors,
                        tokens=outcome.tokens,
                        truncated=outcome.truncated,
                        sparse=outcome.sparse,
                        chunk_tokens=outcome.chunk_tokens,
                        spans=outcome.spans,
                        chunk_hashes=outcome.chunk_hashes,
                    )
                )
                billed += outcome.billed_tokens
            keys = list(outcomes)
            done = settlement.finishing(keys)
            written = 0
            if writes or done:
                # One transaction: the vectors and the queue entries they finish commit
                # together (one commit, one connection), so a crash never leaves written
                # rows queued. Pipelined: BEGIN goes with the write, the completion with
                # COMMIT, two round trips as two autocommit statements would take.
                async with (
                    self.pool.connection() as conn,
                    conn.pipeline(),
                    conn.transaction(),
                ):
                    if writes and not await self._writable(conn, generation):
                        # Cancelled (or dropped) while the request was in flight: the answer
                        # is discarded, so a cancelled generation never grows after cancel.
                        writes = []
                    if writes:
                        written = await vectors.write_vectors(conn, target, generation, writes)
                    await self.queue.complete(done, conn)
            # Counted once committed: an entry another generation's write finished meanwhile
            # is completed now, never before both vectors are in.
            later = settlement.settle(keys, done)
            if later:
                await self.queue.complete(later)
            if writes:
                metrics.record_written(
                    target.name,
                    generation.id,
                    tokens=billed,
                    price_per_million=price,
                    enqueued_at=[item_by_pk[_key(w.pk)].enqueued_at for w in writes],
                )
                stats.tokens += billed
                stats.embedded += written
                stats.stale += len(writes) - written
                stats.per_target[target.name] += written

        known = None
        if Chunking.from_options(generation.options) is not None:
            async with self.pool.connection() as conn:
                known = await vectors.stored_chunks(
                    conn, target, generation, [item.pk for item, _, _ in todo]
                )
        # Inputs of withdrawn requests (the generation was cancelled) get no outcome: their
        # entries are completed with the round, nothing being left to write for them here.
        await self.embedder(generation).embed(
            [EmbedInput(key=_key(item.pk), text=text) for item, text, _ in todo],
            priority=min(item.priority for item, _, _ in todo),
            tenant=target.id,
            on_ready=group,
            known=known,
        )
        return stats

    async def _writable(self, conn: AsyncConn, generation: Generation) -> bool:
        """Whether vectors may still be written to ``generation``. Locked (FOR SHARE) to the
        write's commit: a cancel waits for a write already checked, and a later write sees
        the cancel."""
        if generation.id in self._promoted:
            return True
        state = await self._state(conn, generation.id, lock=True)
        if state == GenerationState.ACTIVE.value:
            self._promoted.add(generation.id)
        return state in (GenerationState.ACTIVE.value, GenerationState.BUILDING.value)


def _key(pk: list[object]) -> Hashable:
    return tuple(str(v) for v in pk)
