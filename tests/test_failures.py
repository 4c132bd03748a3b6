"""Failures are data: attempts, backoff, a visible failed state, retry; pauses on auth errors."""

from __future__ import annotations

import logging

import pytest

from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse, ErrorKind, ProviderError
from syncsvc.providers.local import LocalHashProvider
from tests.helpers import fast_settings, running_daemon, scalar, wait_for
from tests.test_sync import add, assert_in_sync, make_articles


class FlakyProvider(LocalHashProvider):
    """Fails every request with ``kind`` while ``failing`` is True."""

    def __init__(self, kind: ErrorKind, poison: str | None = None) -> None:
        super().__init__()
        self.kind = kind
        self.poison = poison
        self.failing = True
        self.failures = 0

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        hit = self.poison is None or any(self.poison in t for t in request.texts)
        if self.failing and hit:
            self.failures += 1
            raise ProviderError(
                self.kind, "simulated failure", code="Simulated", status=500, request_id="req-1"
            )
        return await super().embed(request)


async def test_retryable_errors_exhaust_attempts_then_fail_visibly(conn, db_url: str) -> None:
    await make_articles(conn, rows=3)
    await add(conn)
    provider = FlakyProvider(ErrorKind.RETRYABLE)
    settings = fast_settings(max_attempts=3)
    async with running_daemon(db_url, settings, provider):
        await wait_for(
            lambda: scalar(conn, "SELECT count(*) = 3 FROM syncsvc.queue WHERE state = 'failed'")
        )
    cur = await conn.execute("SELECT attempts, last_error, request_id FROM syncsvc.failures")
    rows = await cur.fetchall()
    assert [r["attempts"] for r in rows] == [3, 3, 3]
    assert all("simulated failure" in r["last_error"] for r in rows)
    assert {r["request_id"] for r in rows} == {"req-1"}
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.articles_embeddings") == 0

    # An operator retries them once the API is healthy again.
    provider.failing = False
    await conn.execute(
        "UPDATE syncsvc.queue SET state = 'pending', attempts = 0 WHERE state = 'failed'"
    )
    async with running_daemon(db_url, settings, provider):
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 0 FROM syncsvc.queue"))
    await assert_in_sync(conn)


async def test_poison_row_fails_alone(conn, db_url: str) -> None:
    await make_articles(conn)
    await conn.execute(
        "INSERT INTO articles SELECT i, 't' || i, CASE WHEN i = 4 THEN 'poison' ELSE 'ok ' || i "
        "END, 0 FROM generate_series(1, 10) i"
    )
    await add(conn)
    provider = FlakyProvider(ErrorKind.BAD_INPUT, poison="poison")
    async with running_daemon(db_url, fast_settings(), provider):
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 1 FROM syncsvc.queue"))
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.articles_embeddings") == 9
    cur = await conn.execute("SELECT pk, state, attempts, last_error FROM syncsvc.queue")
    row = await cur.fetchone()
    assert row is not None
    assert (row["pk"], row["state"], row["attempts"]) == ([4], "failed", 1)
    assert "simulated failure" in row["last_error"]

    # Editing the poison row gives it a fresh chance.
    provider.failing = False
    async with running_daemon(db_url, fast_settings(), provider):
        await conn.execute("UPDATE articles SET body = 'clean now' WHERE id = 4")
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 0 FROM syncsvc.queue"))
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.articles_embeddings") == 10


async def test_auth_error_pauses_target_without_spending_attempts(conn, db_url: str) -> None:
    await make_articles(conn, rows=5)
    await add(conn)
    provider = FlakyProvider(ErrorKind.AUTH)
    async with running_daemon(db_url, fast_settings(), provider):
        await wait_for(
            lambda: scalar(
                conn, "SELECT paused_reason IS NOT NULL FROM syncsvc.targets WHERE id = 1"
            )
        )
        await wait_for(
            lambda: scalar(conn, "SELECT count(*) = 5 FROM syncsvc.queue WHERE state = 'pending'")
        )
    reason = await scalar(conn, "SELECT paused_reason FROM syncsvc.targets")
    assert "provider refused requests" in reason and "simulated failure" in reason
    assert await scalar(conn, "SELECT max(attempts) FROM syncsvc.queue") == 0
    assert provider.failures == 1  # paused after the first refusal, not once per row

    provider.failing = False  # the key is fixed; a restart resumes the target
    async with running_daemon(db_url, fast_settings(), provider):
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 0 FROM syncsvc.queue"))
    assert await scalar(conn, "SELECT paused_reason FROM syncsvc.targets") is None
    await assert_in_sync(conn)


async def test_a_refusal_met_by_concurrent_rounds_is_logged_once(
    conn, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    await make_articles(conn, rows=40)
    await add(conn)
    provider = FlakyProvider(ErrorKind.AUTH)
    settings = fast_settings(claim_size=5, rounds_in_flight=4)
    with caplog.at_level(logging.ERROR, logger="syncsvc.daemon.worker"):
        async with running_daemon(db_url, settings, provider):
            await wait_for(
                lambda: scalar(
                    conn,
                    "SELECT count(*) = 40 FROM syncsvc.queue WHERE state = 'pending'",
                )
            )
            await wait_for(
                lambda: scalar(conn, "SELECT paused_reason IS NOT NULL FROM syncsvc.targets")
            )
    pauses = [r for r in caplog.records if r.getMessage().startswith("pausing target")]
    assert len(pauses) == 1, [r.getMessage() for r in pauses]


class BuggyProvider(LocalHashProvider):
    """Raises what no provider should (a bug, not a ProviderError) for one table's texts."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker
        self.calls = 0

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if any(self.marker in t for t in request.texts):
            self.calls += 1
            raise RuntimeError("a bug in the provider")
        return await super().embed(request)


async def test_an_unexpected_error_stays_with_its_target_and_ends_failed(conn, db_url: str) -> None:
    """A round that meets an error of neither the target nor the database (a bug) retries
    that target's rows with a backoff until they fail visibly, not once a second for ever;
    the other target's rows in the same rounds are embedded."""
    from tests.helpers import text_targets

    await text_targets(conn, ("docs",), rows=4)
    await text_targets(conn, ("notes",), rows=4, body="notes-row ")
    provider = BuggyProvider("notes-row")
    settings = fast_settings(max_attempts=3)
    async with running_daemon(db_url, settings, provider):
        await wait_for(
            lambda: scalar(
                conn,
                "SELECT count(*) = 4 FROM syncsvc.queue q JOIN syncsvc.targets t "
                "ON t.id = q.target_id WHERE t.name = 'notes' AND q.state = 'failed'",
            ),
            timeout=60,
        )
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.docs_embeddings") == 4
    cur = await conn.execute(
        "SELECT f.attempts, f.last_error FROM syncsvc.failures f WHERE f.target = 'notes'"
    )
    rows = await cur.fetchall()
    assert [r["attempts"] for r in rows] == [3, 3, 3, 3]
    assert all("RuntimeError: a bug in the provider" in r["last_error"] for r in rows)
    assert provider.calls <= 3 * 4  # attempts are spent: no hot loop
