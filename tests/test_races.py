"""Concurrency: stale results never overwrite newer text; daemons share work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from syncsvc.core.models import content_hash
from syncsvc.daemon.worker import Worker
from syncsvc.db.database import create_pool
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse
from syncsvc.providers.local import LocalHashProvider
from syncsvc.queue.entries import Queue, RetryStrategy
from tests.helpers import (
    expected,
    fast_settings,
    queue_empty,
    running_daemon,
    scalar,
    wait_for,
)
from tests.test_sync import DIMS, add, assert_in_sync, current_texts, make_articles, vectors


class BlockingProvider(LocalHashProvider):
    """Holds any request containing ``marker`` until ``release`` is set."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if any(self.marker in t for t in request.texts):
            self.entered.set()
            await self.release.wait()
        return await super().embed(request)


@dataclass
class TwoWorkers:
    """Worker A, whose provider blocks on 'version one', and worker B, which answers at once."""

    slow: BlockingProvider
    queue_a: Queue
    queue_b: Queue
    worker_a: Worker
    worker_b: Worker


@contextlib.asynccontextmanager
async def two_workers(conn, db_url: str) -> AsyncIterator[TwoWorkers]:
    """Row 1 of the articles target holds 'version one text'; neither worker has claimed it."""
    await make_articles(conn)
    await add(conn)
    await conn.execute("INSERT INTO articles VALUES (1, 'old', 'version one text', 0)")
    pool = create_pool(db_url)
    await pool.open()
    try:
        retry = RetryStrategy()
        slow = BlockingProvider("version one")
        queue_a = Queue(pool, "worker-a", lease_seconds=60, retry=retry)
        queue_b = Queue(pool, "worker-b", lease_seconds=60, retry=retry)
        yield TwoWorkers(
            slow,
            queue_a,
            queue_b,
            Worker(pool, queue_a, lambda name: slow),
            Worker(pool, queue_b, lambda name: LocalHashProvider()),
        )
    finally:
        await pool.close()


async def test_stale_result_never_overwrites_newer_text(conn, db_url: str) -> None:
    """Worker A embeds v1 slowly; its lease lapses; B embeds v2; A's late write is refused."""
    async with two_workers(conn, db_url) as w:
        slow, queue_a, queue_b, worker_a, worker_b = (
            w.slow, w.queue_a, w.queue_b, w.worker_a, w.worker_b
        )  # fmt: skip
        target_ids = [1]

        await queue_a.expand_inbox()
        items = await queue_a.claim(target_ids, 10)
        assert len(items) == 1
        round_a = asyncio.create_task(worker_a.process(items))
        await asyncio.wait_for(slow.entered.wait(), 10)

        await conn.execute("UPDATE articles SET body = 'version two text' WHERE id = 1")
        # A's lease lapses (a stalled process or a network partition).
        await conn.execute("UPDATE syncsvc.queue SET lease_until = now() - interval '1 second'")
        await queue_b.expand_inbox()
        assert await queue_b.expire_leases() == 1
        items_b = await queue_b.claim(target_ids, 10)
        stats_b = await worker_b.process(items_b)
        assert stats_b.embedded == 1

        slow.release.set()
        stats_a = await asyncio.wait_for(round_a, 10)
        assert stats_a.embedded == 0
        assert stats_a.stale == 1

    cur = await conn.execute("SELECT embedding, content_hash FROM syncsvc.articles_embeddings")
    rows = await cur.fetchall()
    assert len(rows) == 1
    np.testing.assert_allclose(
        rows[0]["embedding"].to_numpy(), expected("old\n\nversion two text", DIMS), atol=1e-7
    )
    key = await scalar(conn, "SELECT key FROM syncsvc.generations")
    assert rows[0]["content_hash"] == content_hash(key, "old\n\nversion two text")


async def test_sql_and_python_hashes_agree(conn) -> None:
    text = "Zürich — naïve café ☕\n\n多语言 text"
    digest = await scalar(conn, "SELECT syncsvc.content_hash('abc', %s)", (text,))
    assert digest == content_hash("abc", text)


async def test_edit_during_flight_ends_with_newer_vector(conn, db_url: str) -> None:
    await make_articles(conn)
    await add(conn)
    slow = BlockingProvider("first")
    async with running_daemon(db_url, provider=slow):
        await conn.execute("INSERT INTO articles VALUES (1, 't', 'first draft', 0)")
        await asyncio.wait_for(slow.entered.wait(), 10)
        await conn.execute("UPDATE articles SET body = 'second draft' WHERE id = 1")
        slow.release.set()
        await wait_for(lambda: queue_empty(conn))
        await assert_in_sync(conn)


LOG_WRITES = (
    "CREATE TABLE writes (id bigint); "
    "CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS "
    "$$ BEGIN INSERT INTO writes VALUES (NEW.id); RETURN NULL; END $$; "
    "CREATE TRIGGER log_write AFTER INSERT OR UPDATE ON syncsvc.articles_g1 "
    "FOR EACH ROW EXECUTE FUNCTION log_write()"
)


async def test_a_late_identical_result_is_not_written_again(conn, db_url: str) -> None:
    """A's lease lapses mid-request; B embeds the same text and writes it; A's late result for
    that unchanged text is refused: one write, counted stale, the stored vector unchanged."""
    async with two_workers(conn, db_url) as w:
        await conn.execute(LOG_WRITES)
        slow, queue_a, queue_b, worker_a, worker_b = (
            w.slow, w.queue_a, w.queue_b, w.worker_a, w.worker_b
        )  # fmt: skip
        await queue_a.expand_inbox()
        round_a = asyncio.create_task(worker_a.process(await queue_a.claim([1], 10)))
        await asyncio.wait_for(slow.entered.wait(), 10)
        await conn.execute("UPDATE syncsvc.queue SET lease_until = now() - interval '1 second'")
        assert await queue_b.expire_leases() == 1
        assert (await worker_b.process(await queue_b.claim([1], 10))).embedded == 1
        written_at = await scalar(conn, "SELECT embedded_at FROM syncsvc.articles_embeddings")

        slow.release.set()
        stats_a = await asyncio.wait_for(round_a, 10)
        assert (stats_a.embedded, stats_a.stale) == (0, 1)
    assert await scalar(conn, "SELECT count(*) FROM writes") == 1
    assert await scalar(conn, "SELECT embedded_at FROM syncsvc.articles_embeddings") == written_at
    await assert_in_sync(conn)


class PairedProvider(LocalHashProvider):
    """Answers its first request only once the peer provider has received one too, so neither
    daemon can drain the queue before the other has claimed a share."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = asyncio.Event()
        self.peer: PairedProvider | None = None

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self.entered.set()
        assert self.peer is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.peer.entered.wait(), 20)
        return await super().embed(request)


@pytest.mark.cpu_burner
async def test_two_daemons_share_work_without_duplicates(conn, db_url: str) -> None:
    await make_articles(conn, rows=2000)
    await add(conn)
    await conn.execute(LOG_WRITES)
    one, two = PairedProvider(), PairedProvider()
    one.peer, two.peer = two, one
    # Rounds of 100: one daemon's rounds in flight hold at most 500 of the 2,000 rows.
    settings = fast_settings(claim_size=100)
    async with (
        running_daemon(db_url, settings, provider=one),
        running_daemon(db_url, settings, provider=two),
    ):
        await wait_for(lambda: queue_empty(conn), timeout=60)
    assert one.inputs > 0 and two.inputs > 0
    assert one.inputs + two.inputs == 2000
    assert await scalar(conn, "SELECT count(*) FROM writes") == 2000
    assert await scalar(conn, "SELECT count(DISTINCT id) FROM writes") == 2000
    await assert_in_sync(conn)


@contextlib.asynccontextmanager
async def backfill_held_by_a_blocked_round(conn, db_url: str) -> AsyncIterator[BlockingProvider]:
    """Five rows queued at backfill priority; a daemon whose only regular round holds them all,
    blocked in the provider until ``release`` is set. Everything is in sync on exit."""
    await make_articles(conn, rows=5)
    await add(conn)
    await conn.execute("UPDATE articles SET body = 'slow backfill ' || id")
    pool = create_pool(db_url)
    await pool.open()
    try:
        await Queue(pool, "setup", lease_seconds=10, retry=RetryStrategy()).expand_inbox()
    finally:
        await pool.close()
    await conn.execute("UPDATE syncsvc.queue SET priority = 2")
    slow = BlockingProvider("slow backfill")
    settings = fast_settings(rounds_in_flight=1, claim_size=5)
    async with running_daemon(db_url, settings, provider=slow):
        await asyncio.wait_for(slow.entered.wait(), 10)
        yield slow
        slow.release.set()
        await wait_for(lambda: queue_empty(conn), timeout=20)
    await assert_in_sync(conn)


async def test_a_live_edit_is_embedded_while_backfill_rounds_fill_every_slot(
    conn, db_url: str
) -> None:
    """With the only regular round stuck in a backfill, the slot kept for live edits serves
    an edit at once; the backfill rows finish once their provider answers."""
    async with backfill_held_by_a_blocked_round(conn, db_url):
        await conn.execute("INSERT INTO articles VALUES (6, 'live', 'a live edit', 0)")

        async def edit_embedded() -> bool:
            return 6 in await vectors(conn)

        await wait_for(edit_embedded, timeout=10)
        assert set(await vectors(conn)) == {6}
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue WHERE priority = 2") == 5


async def test_a_live_edit_takes_its_row_back_from_a_backfill_round(conn, db_url: str) -> None:
    """The edited row is embedded while the backfill round that held it is still waiting for
    the API; that round's late result is refused and its completion leaves the row alone."""
    async with backfill_held_by_a_blocked_round(conn, db_url):
        await conn.execute("UPDATE articles SET body = 'edited live' WHERE id = 3")

        async def edit_embedded() -> bool:
            return 3 in await vectors(conn)

        await wait_for(edit_embedded, timeout=10)
        text = (await current_texts(conn))[3]
        assert text.endswith("edited live")
        np.testing.assert_allclose((await vectors(conn))[3], expected(text, DIMS), rtol=1e-6)
        # The other four rows are still held by the blocked backfill round.
        in_flight = "SELECT count(*) FROM syncsvc.queue WHERE state = 'in_flight'"
        assert await scalar(conn, in_flight) == 4
