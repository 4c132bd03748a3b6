"""Recovery without waiting out leases: a database restart mid-backfill, and a daemon killed
with -9 while another runs. Leases are the default 120 s; recovery must take seconds."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from syncsvc.capture import targets
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles
from syncsvc.db.database import aconnect, create_pool
from syncsvc.ops import migrate
from syncsvc.queue.entries import Queue, RetryStrategy
from tests.conftest import Cluster, Deployment
from tests.helpers import fast_settings, running_daemon, scalar, spawn_daemon, wait_for

ROWS = 20_000


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[Cluster]:
    """A server of its own: restarting it must not cut the other tests' sessions."""
    cluster = Cluster(None)
    yield cluster
    cluster.stop()


async def _setup(conn: AsyncConn) -> None:
    for table, rows in (("docs", ROWS), ("notes", 10)):
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        await conn.execute(
            f"INSERT INTO {table} SELECT i, 'document ' || i || ' about ' || (i %% 97) "
            "FROM generate_series(1, %s) i",
            (rows,),
        )
        spec = targets.TargetSpec(
            name=table, table=table, columns=("body",), model="local-hash", dimensions=64
        )
        await targets.add_target(conn, fast_settings(), spec)


async def _done(conn: AsyncConn, table: str, rows: int) -> bool:
    return bool(
        await scalar(conn, f"SELECT count(*) = %s FROM syncsvc.{table}_embeddings", (rows,))
    )


async def test_database_restart_mid_backfill_recovers_in_seconds(own_cluster: Cluster) -> None:
    made: Deployment = own_cluster.deployment("restart_mid_backfill", migrated=False)
    await asyncio.to_thread(migrate.upgrade, made.owner)
    async with await aconnect(made.owner) as conn:
        await _setup(conn)
    settings = fast_settings(lease_seconds=120, claim_size=100, poll_interval_seconds=0.5)
    async with running_daemon(made.owner, settings):
        async with await aconnect(made.owner) as conn:
            await wait_for(lambda: _some_done(conn), timeout=30, interval=0.02)
        await asyncio.to_thread(own_cluster.restart, 2.0)
        async with await aconnect(made.owner) as conn:
            await wait_for(lambda: _done(conn, "docs", ROWS), timeout=30)
            await wait_for(lambda: _done(conn, "notes", 10), timeout=5)
            assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue") == 0


async def _some_done(conn: AsyncConn) -> bool:
    count = await scalar(conn, "SELECT count(*) FROM syncsvc.docs_embeddings")
    return bool(0 < count < ROWS // 2)


def _daemon(url: str) -> subprocess.Popen[bytes]:
    return spawn_daemon(url, lease_seconds=120, poll_interval_seconds=0.5, claim_size=200)


@pytest.mark.cpu_burner
def test_kill_9_of_one_daemon_is_taken_over_by_the_other(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        asyncio.run(_setup_sync(db_url))
        survivor = _daemon(db_url)
        victim = _daemon(db_url)
        try:
            held = f"%:{victim.pid}:%"
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM syncsvc.queue WHERE state = 'in_flight' "
                    "AND worker LIKE %s",
                    (held,),
                ).fetchone()
                if row and row[0] > 0:
                    break
                time.sleep(0.01)
            else:
                pytest.fail("the victim never held any entries")
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            # Its claims are someone else's long before its 120 s lease would end (a deadline,
            # not a timing assertion: the lease is the only other way they could go back)...
            deadline = time.monotonic() + 60
            held_by_victim = "SELECT count(*) FROM syncsvc.queue WHERE worker LIKE %s"
            while time.monotonic() < deadline:
                row = conn.execute(held_by_victim, (held,)).fetchone()
                if row == (0,):
                    break
                time.sleep(0.2)
            assert row == (0,), (row, survivor.poll())
            # ...and the survivor finishes the work, however busy the machine.
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM syncsvc.docs_embeddings), "
                    "(SELECT count(*) FROM syncsvc.queue)"
                ).fetchone()
                if row == (ROWS, 0):
                    break
                time.sleep(0.2)
            assert row == (ROWS, 0), (row, survivor.poll())
            assert survivor.poll() is None
        finally:
            for proc in (survivor, victim):
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)


async def _setup_sync(url: str) -> None:
    async with await aconnect(url) as conn:
        await _setup(conn)


async def test_claims_of_a_daemon_without_sessions_are_dead(conn: AsyncConn, db_url: str) -> None:
    await _setup_small(conn)
    target_id = await scalar(conn, "SELECT id FROM syncsvc.targets WHERE name = 'notes'")
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, state, worker, lease_until, updated_at) "
        "VALUES (%s, '[1]', 'in_flight', 'host:1:feedc0de/1', now() + interval '2 min', "
        "now() - interval '1 min')",
        (target_id,),
    )
    held = "SELECT count(*) FROM syncsvc.queue q WHERE q.target_id = %s AND q.state = 'in_flight'"
    dead = "SELECT n FROM (" + sqlfiles.load("jobs")["held_by_dead"].rstrip(";") + ") x"
    alive = await psycopg.AsyncConnection.connect(db_url, application_name="syncsvc feedc0de")
    try:
        # Its daemon still has a session: the claim is alive, whatever its age.
        assert await scalar(conn, dead.replace("%(target_id)s", str(target_id))) == 0
    finally:
        await alive.close()

    async def dead_now() -> bool:  # its backend exits just after the close returns
        return bool(await scalar(conn, dead.replace("%(target_id)s", str(target_id))) == 1)

    await wait_for(dead_now, timeout=30)
    assert await scalar(conn, held, (target_id,)) == 1
    queue = Queue(create_pool(db_url), "someone:2:abc", lease_seconds=120, retry=RetryStrategy())
    await queue.pool.open()
    try:
        # Taken over long before the lease ends (the claim is older than this test's server:
        # no restart grace here, test_a_server_restart_... covers it).
        assert await queue.expire_leases(restart_grace_seconds=0) == 1
    finally:
        await queue.pool.close()
    assert await scalar(conn, held, (target_id,)) == 0


async def _setup_small(conn: AsyncConn) -> None:
    await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    spec = targets.TargetSpec(
        name="notes", table="notes", columns=("body",), model="local-hash", dimensions=64
    )
    await targets.add_target(conn, fast_settings(), spec)


async def test_a_server_restart_does_not_hand_live_daemons_claims_to_others(
    own_cluster: Cluster,
) -> None:
    """A restart cuts every daemon's sessions at once: the first daemon back must not take the
    claims of one still reconnecting (both would pay for its rows). A claim whose lease ran out
    and whose daemon stays away is taken all the same, as is a dead daemon's after the grace."""
    made: Deployment = own_cluster.deployment("restart_keeps_claims", migrated=False)
    await asyncio.to_thread(migrate.upgrade, made.owner)
    async with await aconnect(made.owner) as conn:
        await _setup_small(conn)
        notes = await scalar(conn, "SELECT id FROM syncsvc.targets WHERE name = 'notes'")
        await conn.execute(
            "INSERT INTO syncsvc.queue (target_id, pk, state, worker, lease_until, updated_at) "
            "VALUES (%(t)s, '[1]', 'in_flight', 'host:1:feedc0de/1', now() + interval '2 min', "
            "        now() - interval '1 min'), "
            "       (%(t)s, '[2]', 'in_flight', 'host:2:deadbeef/1', now() - interval '1 s', "
            "        now() - interval '1 min')",
            {"t": notes},
        )
    await asyncio.to_thread(own_cluster.restart)
    pool = create_pool(made.owner)
    await pool.open()
    try:
        queue = Queue(pool, "someone:2:abc", lease_seconds=120, retry=RetryStrategy())
        # Only the lapsed lease goes; feedc0de, not back yet, keeps its claim...
        assert await queue.expire_leases() == 1
        # ...and once back, keeps it for good.
        alive = await psycopg.AsyncConnection.connect(
            made.owner, application_name="syncsvc feedc0de"
        )
        try:
            assert await queue.expire_leases(restart_grace_seconds=0) == 0
        finally:
            await alive.close()

        # Gone again (its backend exits just after the close returns), and the restart grace
        # over: its claim is free.
        async def freed() -> bool:
            return await queue.expire_leases(restart_grace_seconds=0) == 1

        await wait_for(freed, timeout=30)
    finally:
        await pool.close()
