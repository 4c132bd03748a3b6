"""Edit-to-vector lag: edits at a steady rate against a running daemon, timed commit to vector."""

from __future__ import annotations

import asyncio
import random
import statistics
import time

from bench.report import count, wait_until
from syncsvc import jobs
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn


def percentile_ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def lag_during_reembed(
    conn: AsyncConn,
    settings: Settings,
    rows: int,
    rate: float,
    seconds: float,
    dimensions: int,
    rng: random.Random,
) -> tuple[list[float], float]:
    """Start a re-embedding job (a second generation of every row) and measure edit lag while
    it backfills: live edits jump the job's queue entries, so their lag should stay low."""
    job = await jobs.request_reembed(
        conn, settings, "items", model="text-embedding-v4", dimensions=dimensions, provider="sim"
    )
    await wait_until(
        conn,
        f"SELECT count(*) FROM syncsvc.queue WHERE priority = {jobs.BACKFILL_PRIORITY}",
        1,
        timeout=60,
    )
    lags, _ = await edit_lag(conn, rows, rate, seconds, rng)
    building = f"SELECT count(*) FROM syncsvc.items_g{job.generation_id}"
    return lags, await count(conn, building) / rows


async def edit_lag(
    conn: AsyncConn, rows: int, rate: float, seconds: float, rng: random.Random
) -> tuple[list[float], int]:
    """Edit distinct rows of ``items`` at ``rate``/s; lag = vector written - edit committed."""
    total = int(rate * seconds)
    ids = rng.sample(range(1, rows + 1), min(total, rows))
    committed: dict[int, float] = {}
    interval = 1.0 / rate
    next_at = time.monotonic()
    for n, pk in enumerate(ids):
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        cur = await conn.execute(
            "UPDATE items SET body = body || %s WHERE id = %s "
            "RETURNING extract(epoch FROM clock_timestamp()) AS at",
            (f" edit{n}", pk),
        )
        row = await cur.fetchone()
        assert row is not None
        committed[pk] = float(row["at"])
        next_at += interval
    # Done when each edited row's vector is the embedding of its current text.
    query = (
        "SELECT count(*) FROM syncsvc.items_embeddings e JOIN items i USING (id) "
        "JOIN syncsvc.generations g ON g.id = e.generation_id "
        "WHERE e.id = ANY(%s) "
        "AND e.content_hash = syncsvc.content_hash(g.key, concat(i.title, E'\\n\\n', i.body))"
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cur = await conn.execute(query, (list(committed),))
        row = await cur.fetchone()
        if row is not None and row["count"] >= len(committed):
            break
        await asyncio.sleep(0.05)
    cur = await conn.execute(
        "SELECT id, extract(epoch FROM embedded_at) AS at FROM syncsvc.items_embeddings "
        "WHERE id = ANY(%s)",
        (list(committed),),
    )
    lags = [float(r["at"]) - committed[r["id"]] for r in await cur.fetchall()]
    return [max(0.0, lag) for lag in lags], len(committed)
