"""/readyz follows the database and the LISTEN connection: unready within seconds, then back."""

from __future__ import annotations

import httpx
import psycopg

from syncsvc.core.types import AsyncConn
from syncsvc.db.database import create_pool
from syncsvc.observe import metrics
from syncsvc.web.app import create_app
from syncsvc.web.auth import AdminAccess
from tests.helpers import text_targets, wait_for
from tests.ops_support import scrape, value, web_daemon, web_settings
from tests.test_sync import add, make_articles


def _dbname(url: str) -> str:
    return url.partition("?")[0].rsplit("/", 1)[1]


def _admin(pg_server: str, statement: str) -> None:
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(statement)


async def _status(client: httpx.AsyncClient) -> tuple[int, dict[str, object]]:
    response = await client.get("/readyz")
    return response.status_code, response.json()


async def test_unready_while_listen_connection_is_down(
    conn: AsyncConn, db_url: str, pg_server: str
) -> None:
    await make_articles(conn, rows=3)
    await add(conn)
    name = _dbname(db_url)
    async with (
        web_daemon(db_url) as (daemon, web),
        httpx.AsyncClient(base_url=web.url) as client,
    ):
        await wait_for(lambda: _is(client, 200), timeout=10)
        # New connections are refused, so the listener cannot come back by itself...
        _admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            # ...once its backend is gone.
            _admin(
                pg_server,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND query LIKE 'LISTEN%%'",
            )
            # A deadline, not a timing assertion: unready once the listener is found gone.
            await wait_for(lambda: _is(client, 503), timeout=30, interval=0.05)
            code, body = await _status(client)
            assert code == 503
            checks = body["checks"]
            assert isinstance(checks, dict)
            assert checks["listener"]["ok"] is False
            assert checks["database"]["ok"] is True  # the pool's sessions survived
        finally:
            _admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        await wait_for(lambda: _is(client, 200), timeout=20, interval=0.1)
        assert daemon.listener.connected


async def test_unready_while_database_is_away(db_url: str, pg_server: str) -> None:
    name = _dbname(db_url)
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open(wait=True)
    app = create_app(pool, web_settings(), AdminAccess(True, None))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await _status(client))[0] == 200
            assert (await client.get("/admin")).status_code == 200
            _admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            try:
                _admin(
                    pg_server,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    f"WHERE datname = '{name}'",
                )
                await wait_for(lambda: _is(client, 503), timeout=30, interval=0.05)
                code, body = await _status(client)
                assert code == 503
                checks = body["checks"]
                assert isinstance(checks, dict)
                assert checks["database"]["ok"] is False
                # The admin page says so in a line (a 503 to retry), never a bare 500.
                page = await client.get("/admin")
                assert page.status_code == 503, page.text
                assert page.text.startswith("database unavailable: ")
                assert page.headers["retry-after"] == "5"
            finally:
                _admin(pg_server, f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
            await wait_for(lambda: _is(client, 200), timeout=20, interval=0.2)
    finally:
        await pool.close()


async def _is(client: httpx.AsyncClient, code: int) -> bool:
    return (await client.get("/readyz")).status_code == code


async def test_a_fresh_daemon_reports_ready_with_nobody_asking(
    conn: AsyncConn, db_url: str
) -> None:
    """syncsvc_ready follows the daemon's own checks: 1 soon after start with only /metrics
    scraped (no /readyz, no admin page), 0 once a target is paused, while the healthy
    neighbour stays unpaused."""
    await text_targets(conn, rows=3)
    metrics.READY.set(0)  # what a fresh process exports before any check
    async with (
        web_daemon(db_url) as (_daemon, web),
        httpx.AsyncClient(base_url=web.url) as client,
    ):

        async def ready(expected: float) -> bool:
            return value(await scrape(client), "syncsvc_ready") == expected

        await wait_for(lambda: ready(1), timeout=30)
        await conn.execute(
            "UPDATE syncsvc.targets SET paused_reason = 'paused by the operator' "
            "WHERE name = 'docs'"
        )
        await wait_for(lambda: ready(0), timeout=30)
        data = await scrape(client)
        assert value(data, "syncsvc_target_paused", target="docs") == 1
        assert value(data, "syncsvc_target_paused", target="notes") == 0
