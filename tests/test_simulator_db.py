"""Every fault the simulator injects, end to end: daemon + real HTTP + PostgreSQL final state."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from syncsvc.capture import targets
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.providers.registry import build_provider
from syncsvc.simulator import FaultKind, FaultRule, SimulatorThread
from syncsvc.simulator.vectors import embedding
from tests.helpers import fast_settings, running_daemon, scalar, wait_for
from tests.simulator_fixtures import SIM_KEY_ENV, simulator_settings
from tests.test_sync import current_texts, make_articles

DIMS = 64


def expected(text: str, dims: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """The simulator's (dense) vector of ``text``, as stored."""
    return np.asarray(embedding(text, dims), dtype=np.float32)


def settings_for(
    sim: SimulatorThread, profile: str = "dashscope-intl", timeout: float = 5.0, **fields: Any
) -> Settings:
    providers = simulator_settings(sim, profile, timeout_seconds=timeout, **fields).providers
    return Settings(worker=fast_settings().worker, providers=providers)


async def setup(conn: AsyncConn, settings: Settings, rows: int, poison_id: int = 0) -> None:
    await make_articles(conn)
    await conn.execute(
        "INSERT INTO articles SELECT i, 'title ' || i, CASE WHEN i = %s THEN 'has POISON' "
        "ELSE 'body text ' || i END, 0 FROM generate_series(1, %s) i",
        (poison_id, rows),
    )
    spec = targets.TargetSpec(
        name="articles",
        table="articles",
        columns=("title", "body"),
        model="text-embedding-v4",
        dimensions=DIMS,
        provider="sim",
    )
    await targets.add_target(conn, settings, spec)


async def assert_synced(conn: AsyncConn, exclude: tuple[int, ...] = ()) -> None:
    texts = {pk: t for pk, t in (await current_texts(conn)).items() if pk not in exclude}
    cur = await conn.execute("SELECT id, embedding FROM syncsvc.articles_embeddings")
    stored = {r["id"]: r["embedding"].to_numpy() for r in await cur.fetchall()}
    assert set(stored) == set(texts)
    for pk, text in texts.items():
        np.testing.assert_allclose(stored[pk], expected(text, DIMS), rtol=1e-6, atol=1e-7)


async def run_until(conn: AsyncConn, url: str, settings: Settings, query: str) -> None:
    provider = build_provider("sim", settings)
    async with running_daemon(url, settings, provider):
        await wait_for(lambda: scalar(conn, query), timeout=30)


QUEUE_EMPTY = "SELECT count(*) = 0 FROM syncsvc.queue"
PAUSED = "SELECT paused_reason IS NOT NULL FROM syncsvc.targets WHERE name = 'articles'"


@pytest.mark.parametrize(
    "rule",
    [
        FaultRule(FaultKind.RATE_LIMIT, count=2, retry_after=0.1),
        FaultRule(FaultKind.RATE_LIMIT, count=2, retry_after_ms=100),
        FaultRule(FaultKind.RATE_LIMIT, count=1),
        FaultRule(FaultKind.SERVER_ERROR, count=3),
        # Well beyond the client's timeout (a hung answer is never counted as served).
        FaultRule(FaultKind.HANG, count=1, hang_seconds=3.0),
        FaultRule(FaultKind.MALFORMED, count=2),
        FaultRule(FaultKind.NAN, count=2),
        FaultRule(FaultKind.BAD_VECTOR, count=2),
        FaultRule(FaultKind.MISSING, count=2),
        FaultRule(FaultKind.BASE64),
        FaultRule(FaultKind.SERVER_ERROR, count=6),  # outlasts one round's retries
    ],
    ids=lambda r: f"{r.kind.value}-{r.count}",
)
async def test_transient_fault_ends_with_every_row_embedded(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread, rule: FaultRule
) -> None:
    # A short timeout only where the fault is a hang: elsewhere a slow, loaded machine must not
    # turn a served request into a client-side timeout (and a second, duplicate request).
    settings = settings_for(simulator, timeout=1.0 if rule.kind is FaultKind.HANG else 5.0)
    await setup(conn, settings, rows=15)
    simulator.set_faults(rule)
    await run_until(conn, db_url, settings, QUEUE_EMPTY)
    await assert_synced(conn)
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.failures") == 0
    stats = simulator.stats()
    assert stats["faults"][rule.kind.value] == (rule.count or stats["ok"])
    assert stats["inputs"] == 15  # every row sent successfully exactly once


async def test_poison_row_fails_with_the_api_message_and_the_rest_embed(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    settings = settings_for(simulator)
    await setup(conn, settings, rows=20, poison_id=7)
    simulator.set_faults(poison=["POISON"])
    await run_until(
        conn, db_url, settings, "SELECT count(*) = 1 FROM syncsvc.queue WHERE state = 'failed'"
    )
    await assert_synced(conn, exclude=(7,))
    cur = await conn.execute("SELECT pk, attempts, last_error, request_id FROM syncsvc.failures")
    [row] = await cur.fetchall()
    assert row["pk"] == [7] and row["attempts"] == 1
    assert "Input data may contain inappropriate content." in row["last_error"]
    assert row["request_id"]


@pytest.mark.parametrize("fault", ["bad-key", FaultKind.ARREARAGE, FaultKind.UNAUTHORIZED])
async def test_refused_requests_pause_the_target_and_a_restart_resumes_without_loss(
    conn: AsyncConn,
    db_url: str,
    simulator: SimulatorThread,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    settings = settings_for(simulator)
    await setup(conn, settings, rows=25)
    if fault == "bad-key":
        monkeypatch.setenv(SIM_KEY_ENV, "sk-revoked")
    else:
        simulator.set_faults(FaultRule(FaultKind(fault)))
    await run_until(conn, db_url, settings, PAUSED)
    reason = await scalar(conn, "SELECT paused_reason FROM syncsvc.targets")
    assert ("Arrearage" if fault == FaultKind.ARREARAGE else "invalid_api_key") in reason
    assert "sk-revoked" not in reason
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.articles_embeddings") == 0
    # Nothing burnt: every row is still queued, none failed.
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue WHERE state = 'pending'") == 25
    assert await scalar(conn, "SELECT max(attempts) FROM syncsvc.queue") == 0

    # The operator fixes the key (or pays the bill) and restarts.
    monkeypatch.undo()
    simulator.clear_faults()
    await run_until(conn, db_url, settings, QUEUE_EMPTY)
    await assert_synced(conn)
    assert await scalar(conn, "SELECT paused_reason FROM syncsvc.targets") is None
