"""Long work is visible: the daemon logs progress while it embeds, ``status`` shows the rate
and the time left, and a re-embed's dry run says how long it would take."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import pytest

from syncsvc.core.types import AsyncConn
from syncsvc.embed.profiles import get_profile
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse
from syncsvc.jobs import ASSUMED_LATENCY, embedding_seconds
from syncsvc.observe import status
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import Deployment
from tests.helpers import (
    fast_settings,
    queue_empty,
    running_daemon,
    scalar,
    text_targets,
    wait_for,
)


class SlowLocalHash(LocalHashProvider):
    """local-hash with an API's round trip, so a backlog takes a few seconds."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        await asyncio.sleep(0.05)
        return await super().embed(request)


async def test_the_daemon_logs_progress_and_status_shows_rate_and_eta(
    conn: AsyncConn, deployment: Deployment, caplog: pytest.LogCaptureFixture
) -> None:
    await text_targets(conn, rows=1500)
    settings = fast_settings(progress_log_seconds=0.5, claim_size=40, rounds_in_flight=1)
    seen: list[status.TargetStatus] = []
    with caplog.at_level(logging.INFO, logger="syncsvc.observe.progress"):
        async with running_daemon(deployment.owner, settings, SlowLocalHash()):

            async def busy() -> bool:
                found = {s.target: s for s in await status.collect(conn)}["docs"]
                seen.append(found)
                return found.rows_per_second > 0 and found.eta_seconds is not None

            await wait_for(busy, timeout=30, interval=0.2)
            await wait_for(lambda: queue_empty(conn), timeout=120)
    lines = [r.getMessage() for r in caplog.records if r.name == "syncsvc.observe.progress"]
    assert lines, "no progress line while 3,000 rows were embedded"
    assert "rows/s: docs " in lines[0] and "waiting, about " in lines[0]
    busy_status = seen[-1]
    assert busy_status.pending + busy_status.in_flight > 0
    assert busy_status.eta_seconds == pytest.approx(
        (busy_status.pending + busy_status.in_flight) / busy_status.rows_per_second
    )
    done = {s.target: s for s in await status.collect(conn)}
    assert (done["docs"].embedded, done["docs"].pending, done["docs"].eta_seconds) == (1500, 0, 0)
    assert done["notes"].embedded == 1500  # the neighbour's backlog was worked off too


def test_a_reembed_estimate_says_how_long() -> None:
    profile = dataclasses.replace(get_profile("dashscope-intl"), concurrency=8, rpm=None, tpm=None)
    rows, tokens = 20_000, 800_000
    assert embedding_seconds(profile, rows, tokens) == pytest.approx(2000 * ASSUMED_LATENCY / 8)
    capped: Any = dataclasses.replace(profile, rpm=600)
    assert embedding_seconds(capped, rows, tokens) == pytest.approx(200.0)
    by_tokens: Any = dataclasses.replace(profile, tpm=60_000)
    assert embedding_seconds(by_tokens, rows, tokens) == pytest.approx(800.0)
    assert embedding_seconds(get_profile("local-hash"), rows, tokens) == 0.0
    assert status.duration(800.0) == "13m20s" and status.duration(3700) == "1h01m"


async def test_embedding_starts_while_the_start_up_sweep_still_reads(
    conn: AsyncConn, deployment: Deployment
) -> None:
    """The claimer runs during the start-up sweep: each committed chunk is embedded at once,
    so a big table's first vectors do not wait for the whole table to be read."""
    from syncsvc.daemon.process import Daemon
    from syncsvc.ops import wiring as operations

    await text_targets(conn, names=("docs",), rows=6000)
    await conn.execute("TRUNCATE syncsvc.queue, syncsvc.inbox")  # leave it all to the sweep
    provider = SlowLocalHash()
    first_call: list[int] = []
    """Rows the sweep had queued when the first request went out."""
    original = provider.embed
    queued = "SELECT count(*) FROM syncsvc.queue"

    async def embed(request: EmbeddingRequest) -> EmbeddingResponse:
        if not first_call:
            first_call.append(await scalar(conn, queued))
        return await original(request)

    provider.embed = embed  # type: ignore[method-assign]
    # Small chunks make the sweep take seconds: the first request must come long before its end.
    settings = fast_settings(sweep_chunk_rows=50)
    daemon = Daemon(settings, deployment.owner, provider_factory=lambda _: provider)
    operations.install(daemon)
    swept: list[int] = []
    sweep = daemon.sweep

    async def counted_sweep(target_id: int | None = None) -> int:
        enqueued = await sweep(target_id)
        if target_id is None and not swept:
            swept.append(enqueued)
        return enqueued

    daemon.sweep = counted_sweep  # type: ignore[method-assign]
    task = asyncio.create_task(daemon.run())
    try:
        await wait_for(
            lambda: scalar(conn, "SELECT count(*) = 6000 FROM syncsvc.docs_embeddings"), timeout=120
        )
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
    assert swept == [6000] and first_call
    # Counted, not timed: the first request went out with at most half the table queued.
    assert 0 < first_call[0] <= 3000, "the first request waited for the sweep"
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.docs_embeddings") == 6000
