"""The daemon survives its database connections being cut (restart, failover, idle kill)."""

from __future__ import annotations

from syncsvc.core.types import AsyncConn
from tests.helpers import queue_empty, running_daemon, scalar, wait_for
from tests.test_sync import add, assert_in_sync, make_articles

KILL_OTHERS = (
    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


async def test_daemon_recovers_after_connections_are_terminated(
    conn: AsyncConn, db_url: str
) -> None:
    await make_articles(conn, rows=20)
    await add(conn)
    async with running_daemon(db_url) as daemon:
        await wait_for(lambda: queue_empty(conn))
        for _ in range(2):
            assert await scalar(conn, KILL_OTHERS) >= 1
            await conn.execute("UPDATE articles SET body = body || ' again' WHERE id <= 5")
            await wait_for(lambda: queue_empty(conn), timeout=60)
        await wait_for(lambda: _listening(daemon), timeout=30)
        assert not daemon.stop_event.is_set()
    await assert_in_sync(conn)


async def _listening(daemon: object) -> bool:
    return bool(getattr(getattr(daemon, "listener", None), "connected", False))
