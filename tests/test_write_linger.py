"""A backfill's replies share a write; a live edit's reply is written as it returns.

Each write is one transaction whose ``now()`` is every written row's ``embedded_at``, so the
rows per distinct ``embedded_at`` are the rows per write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from syncsvc.capture import reconcile
from syncsvc.core.settings import WorkerSettings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon.worker import Worker
from syncsvc.db.database import create_pool
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse
from syncsvc.providers.local import LocalHashProvider
from syncsvc.queue.entries import Queue, RetryStrategy
from tests.test_sync import add, make_articles

ROWS = 50
LINGER = WorkerSettings(write_linger_seconds=3600, write_linger_rows=25)
"""Lingering 'for ever': only the row count or the round's last reply ends a wait."""


class OneAtATime(LocalHashProvider):
    """Answers a request only when the test lets one through (``allow``)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Semaphore(0)
        self.answered = asyncio.Event()

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        await self.gate.acquire()
        response = await super().embed(request)
        self.answered.set()
        return response

    async def allow(self, count: int) -> None:
        """Let ``count`` requests through, each once the worker has had the previous reply."""
        for _ in range(count):
            self.answered.clear()
            self.gate.release()
            await self.answered.wait()
            for _ in range(50):  # the worker takes the reply (and starts any write) now
                await asyncio.sleep(0)


@contextlib.asynccontextmanager
async def round_of(db_url: str) -> AsyncIterator[tuple[Queue, OneAtATime, Worker]]:
    pool = create_pool(db_url)
    await pool.open()
    try:
        queue = Queue(pool, "linger", lease_seconds=60, retry=RetryStrategy())
        provider = OneAtATime()
        yield queue, provider, Worker(pool, queue, lambda name: provider, LINGER)
    finally:
        await pool.close()


async def rows_per_write(conn: AsyncConn) -> list[int]:
    cur = await conn.execute(
        "SELECT count(*) AS n FROM syncsvc.articles_embeddings GROUP BY embedded_at "
        "ORDER BY embedded_at"
    )
    return [int(r["n"]) for r in await cur.fetchall()]


async def test_a_backfills_replies_share_writes(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, ROWS)
    await add(conn)
    assert await reconcile.sweep_targets(conn, target_id=None, chunk_rows=1000) == ROWS
    async with round_of(db_url) as (queue, provider, worker):
        items = await queue.claim([1], ROWS)
        assert len(items) == ROWS and min(i.priority for i in items) > 0
        processing = asyncio.create_task(worker.process(items))
        await provider.allow(ROWS // 10)
        stats = await asyncio.wait_for(processing, 30)
    assert stats.embedded == ROWS
    # Replies of 10 rows, one at a time: the first write waits until 25 rows are ready (three
    # replies), the second ends with the round's last reply.
    assert await rows_per_write(conn) == [30, 20]


async def test_a_live_edits_reply_is_written_as_it_returns(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn)
    await add(conn)
    await conn.execute(
        "INSERT INTO articles SELECT i, 'title ' || i, 'edited body ' || i, i "
        "FROM generate_series(1, %s) i",
        (ROWS,),
    )
    async with round_of(db_url) as (queue, provider, worker):
        await queue.expand_inbox()
        items = await queue.claim([1], ROWS)
        assert len(items) == ROWS and max(i.priority for i in items) == 0
        processing = asyncio.create_task(worker.process(items))
        await provider.allow(ROWS // 10)
        stats = await asyncio.wait_for(processing, 30)
    assert stats.embedded == ROWS
    writes = await rows_per_write(conn)
    assert writes[0] == 10 and sum(writes) == ROWS
