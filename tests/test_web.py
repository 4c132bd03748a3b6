"""The daemon's HTTP surface: probes, /metrics during a backfill, admin page and its actions."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from syncsvc.core.types import AsyncConn
from syncsvc.db.database import create_pool
from syncsvc.observe import status
from syncsvc.observe.metrics import REGISTRY
from syncsvc.web.app import create_app
from syncsvc.web.auth import AdminAccess, is_loopback
from tests.helpers import queue_empty, scalar, wait_for
from tests.ops_support import POISON_ERROR, PoisonProvider, scrape, value, web_daemon, web_settings
from tests.test_sync import add, make_articles


async def test_metrics_follow_a_backfill(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=300)
    await add(conn)
    provider = PoisonProvider(delay=0.05)
    settings = web_settings().model_copy(
        update={"worker": web_settings().worker.model_copy(update={"claim_size": 10})}
    )
    before = REGISTRY.get_sample_value("syncsvc_rows_embedded_total", {"target": "articles"}) or 0
    lag_name = "syncsvc_commit_to_vector_lag_seconds_count"
    lags_before = REGISTRY.get_sample_value(lag_name, {"target": "articles"}) or 0
    async with (
        web_daemon(db_url, provider, settings) as (_, web),
        httpx.AsyncClient(base_url=web.url) as client,
    ):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        first = await scrape(client)
        pending_first = value(first, "syncsvc_queue_entries", target="articles", state="pending")
        assert pending_first > 0
        assert value(first, "syncsvc_target_source_rows", target="articles") == 300
        await asyncio.sleep(0.5)
        second = await scrape(client)
        pending_second = value(second, "syncsvc_queue_entries", target="articles", state="pending")
        assert pending_second < pending_first  # the backlog falls
        await wait_for(lambda: queue_empty(conn), timeout=60)
        done = await scrape(client)
        rows = {r.target: r for r in await status.collect(conn)}
        # The same figures as `syncsvc status`.
        assert (
            value(
                done,
                "syncsvc_target_embedded_rows",
                target="articles",
                generation="1",
                state="active",
            )
            == rows["articles"].embedded
            == 300
        )
        assert value(done, "syncsvc_queue_entries", target="articles", state="pending") == 0
        assert value(done, "syncsvc_target_coverage_ratio", target="articles") == 1.0
        assert value(done, "syncsvc_rows_embedded_total", target="articles") - before == 300
        assert value(done, "syncsvc_queue_entries_processed_total", outcome="embedded") >= 300
        assert value(done, "syncsvc_listener_connected") == 1
        # Every written row's commit-to-vector lag was observed, and its tokens counted.
        assert value(done, lag_name, target="articles") - lags_before >= 300
        assert value(done, "syncsvc_embedding_tokens_total", target="articles", generation="1") > 0
        assert value(done, "syncsvc_daemons") >= 1
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"


async def test_admin_page_shows_failures_and_retries_them(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=5)
    await conn.execute("UPDATE articles SET body = 'POISON <script>' WHERE id = 3")
    await add(conn)
    provider = PoisonProvider()
    async with web_daemon(db_url, provider) as (_, web):
        failed = "SELECT count(*) FROM syncsvc.queue WHERE state = 'failed'"
        await wait_for(lambda: _equals(conn, failed, 1))
        async with httpx.AsyncClient(base_url=web.url) as client:
            page = await client.get("/", follow_redirects=True)
            assert page.status_code == 200
            assert POISON_ERROR in page.text and "req-poison-1" in page.text
            assert 'data-action="retry-failed"' in page.text
            provider.poison = None
            foreign = await client.post(
                "/admin/retry-failed",
                data={"target": "articles"},
                headers={"Origin": "http://evil.example"},
            )
            assert foreign.status_code == 403
            answer = await client.post(
                "/admin/retry-failed", data={"target": "articles"}, headers={"Origin": web.url}
            )
            assert answer.status_code == 303
            assert "1%20failed%20rows%20queued%20again" in answer.headers["location"]
        await wait_for(lambda: queue_empty(conn))
        embedded = "SELECT count(*) FROM syncsvc.articles_embeddings WHERE id = 3"
        assert await scalar(conn, embedded) == 1


async def _equals(conn: AsyncConn, query: str, expected: int) -> bool:
    return bool(await scalar(conn, query) == expected)


def test_exposure_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCSVC_ADMIN_TOKEN", raising=False)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("0.0.0.0")
    off = AdminAccess.from_settings(web_settings(admin_enabled=False), "127.0.0.1")
    assert not off.enabled
    exposed = AdminAccess.from_settings(web_settings(), "0.0.0.0")
    assert not exposed.enabled and "SYNCSVC_ADMIN_TOKEN" in exposed.reason
    assert AdminAccess.from_settings(web_settings(), "127.0.0.1") == AdminAccess(
        True, None, hosts=frozenset({"127.0.0.1"})
    )
    monkeypatch.setenv("SYNCSVC_ADMIN_TOKEN", "s3cret-token")
    assert AdminAccess.from_settings(web_settings(), "0.0.0.0").token == "s3cret-token"


async def test_token_protects_the_admin_page(db_url: str) -> None:
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open()
    app = create_app(pool, web_settings(), AdminAccess(True, "s3cret-token"))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://ops.test") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/metrics")).status_code == 200  # scrapers need no token
            anonymous = await client.get("/admin")
            assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login"
            assert (await client.post("/admin/retry-failed")).status_code == 401
            assert (await client.get("/admin/stats")).status_code == 303  # the samples too
            bearer = await client.get("/admin", headers={"Authorization": "Bearer s3cret-token"})
            assert bearer.status_code == 200 and "Targets" in bearer.text
            samples = await client.get(
                "/admin/stats", headers={"Authorization": "Bearer s3cret-token"}
            )
            # Without a daemon in this process there are no samples (serve-admin).
            assert samples.status_code == 200 and samples.json()["samples"] == []
            wrong = await client.post("/login", data={"token": "guess"})
            assert wrong.status_code == 401
            # A typed non-ASCII guess is a wrong token too, not a 500.
            assert (await client.post("/login", data={"token": "s3cret-é"})).status_code == 401
            accented = await client.get("/admin", headers={"Authorization": "Bearer é".encode()})
            assert accented.status_code == 303
            signed = await client.post("/login", data={"token": "s3cret-token"})
            assert signed.status_code == 303
            cookie = signed.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie
            assert (await client.get("/admin")).status_code == 200
            retry = await client.post("/admin/retry-failed", headers={"Origin": "http://ops.test"})
            assert retry.status_code == 303
            # Another site cannot sign the operator out; the page itself can.
            elsewhere = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}
            assert (await client.post("/logout", headers=elsewhere)).status_code == 403
            assert (await client.get("/admin")).status_code == 200
            out = await client.post("/logout", headers={"Origin": "http://ops.test"})
            assert out.status_code == 303
    finally:
        await pool.close()


async def test_job_buttons_drive_a_reembedding(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=20)
    await add(conn)
    async with (
        web_daemon(db_url) as (_, web),
        httpx.AsyncClient(base_url=web.url, headers={"Origin": web.url}) as client,
    ):
        await wait_for(lambda: queue_empty(conn))
        form = {"target": "articles", "provider": "", "model": "local-hash", "dimensions": "128"}
        dry = await client.post("/admin/jobs/start", data={**form, "mode": "dry-run"})
        assert "dry%20run" in dry.headers["location"] and "20%20rows" in dry.headers["location"]
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
        started = await client.post("/admin/jobs/start", data={**form, "mode": "start"})
        assert "job%20" in started.headers["location"], started.headers["location"]
        job = await scalar(conn, "SELECT id FROM syncsvc.jobs")
        paused = await client.post(f"/admin/jobs/{job}/pause")
        assert "err=" not in paused.headers["location"], paused.headers["location"]
        page = (await client.get("/admin")).text
        assert f'data-job="{job}"' in page and 'data-action="resume"' in page
        await client.post(f"/admin/jobs/{job}/resume")
        generation = await scalar(conn, "SELECT generation_id FROM syncsvc.jobs")
        done = "SELECT state = 'completed' FROM syncsvc.jobs"
        await wait_for(lambda: _true(conn, done), timeout=30)
        promoted = await client.post(
            "/admin/promote", data={"target": "articles", "generation": str(generation)}
        )
        location = promoted.headers["location"]
        assert "err=" not in location, location
        active = "SELECT id FROM syncsvc.generations WHERE state = 'active'"
        assert await scalar(conn, active) == generation
        refused = await client.post("/admin/jobs/999/cancel")
        assert refused.status_code == 404 and "999" in refused.text


async def _true(conn: AsyncConn, query: str) -> bool:
    return bool(await scalar(conn, query))


async def test_dns_rebinding_is_refused_and_pages_cannot_be_framed(
    conn: AsyncConn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNCSVC_ADMIN_TOKEN", raising=False)
    await make_articles(conn, rows=3)
    await add(conn)
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, state, last_error) "
        "SELECT id, '[1]', 'failed', 'boom' FROM syncsvc.targets"
    )
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open()
    # Tokenless, as 'serve-admin' on 127.0.0.1 builds it.
    access = AdminAccess.from_settings(web_settings(), "127.0.0.1")
    app = create_app(pool, web_settings(), access)
    transport = httpx.ASGITransport(app=app)
    failed = "SELECT count(*) FROM syncsvc.queue WHERE state = 'failed'"
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://evil.example") as evil:
            # evil.example resolves to 127.0.0.1: the browser sends its own name and origin.
            attack = await evil.post(
                "/admin/retry-failed", headers={"Origin": "http://evil.example"}
            )
            assert attack.status_code == 421
            assert (await evil.get("/admin")).status_code == 421
            assert await scalar(conn, failed) == 1
            assert (await evil.get("/healthz")).status_code == 200  # probes answer any name
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8080") as ok:
            page = await ok.get("/admin")
            assert page.status_code == 200
            for response in (page, await ok.get("/metrics"), await ok.get("/healthz")):
                assert response.headers["x-frame-options"] == "DENY"
                assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
                assert response.headers["x-content-type-options"] == "nosniff"
            retry = await ok.post(
                "/admin/retry-failed", headers={"Origin": "http://127.0.0.1:8080"}
            )
            assert retry.status_code == 303
            assert await scalar(conn, failed) == 0
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost:8080") as ok:
            assert (await ok.get("/admin")).status_code == 200
    finally:
        await pool.close()
    listed = AdminAccess.from_settings(
        web_settings(admin_allowed_hosts=["ops.example.com"]), "127.0.0.1"
    )
    assert listed.hosts == frozenset({"ops.example.com", "127.0.0.1"})


async def test_pause_and_resume_buttons(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=3)
    await add(conn)
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open()
    app = create_app(pool, web_settings(), AdminAccess(True, None))
    transport = httpx.ASGITransport(app=app)
    paused = "SELECT paused_reason FROM syncsvc.targets WHERE name = 'articles'"
    origin = {"Origin": "http://127.0.0.1"}
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            page = (await client.get("/admin")).text
            assert 'action="/admin/targets/pause"' in page
            done = await client.post(
                "/admin/targets/pause", data={"target": "articles"}, headers=origin
            )
            assert done.status_code == 303 and "paused" in done.headers["location"]
            assert await scalar(conn, paused) == "paused by an operator"
            assert 'action="/admin/targets/resume"' in (await client.get("/admin")).text
            await client.post("/admin/targets/resume", data={"target": "articles"}, headers=origin)
            assert await scalar(conn, paused) is None
            # A table it cannot read is a problem shown as such, not a pause: Pause is offered
            # (Resume would do nothing), as `target pause` / `target resume` see it.
            await conn.execute("ALTER TABLE articles RENAME TO articles_away")
            page = (await client.get("/admin")).text
            assert 'data-state="problem"' in page and "cannot read public.articles" in page
            assert 'action="/admin/targets/pause"' in page
            assert 'action="/admin/targets/resume"' not in page
            await conn.execute("ALTER TABLE articles_away RENAME TO articles")
    finally:
        await pool.close()
