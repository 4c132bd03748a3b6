"""Capture from the WAL (``capture = "wal"``): no trigger on the application's table, the
daemon reads syncsvc's logical replication slot and feeds the same queue.

The servers here are the ``wal_clusters`` (``wal_level = logical``, the owner granted
REPLICATION by the superuser, as a DBA would); the writer and reader roles get nothing new.
Every test keeps a trigger-mode target beside the WAL ones and checks it stays exact too.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from syncsvc import Client
from syncsvc.capture import slots, targets, wal
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import Capture
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon import actions, walreader
from syncsvc.db.database import aconnect
from syncsvc.observe import metrics
from syncsvc.providers.registry import build_provider
from syncsvc.simulator import SimulatorThread
from tests.conftest import Cluster, Deployment
from tests.helpers import expected, fast_settings, running_daemon, scalar, spawn_daemon, wait_for
from tests.simulator_fixtures import simulator_settings
from tests.test_promote import run_cli

DIMS = 64
_names = itertools.count()


@pytest.fixture(params=[16, 18], ids=["pg16", "pg18"])
def wal_cluster(request: pytest.FixtureRequest, wal_clusters: Callable[[int], Cluster]) -> Cluster:
    return wal_clusters(int(request.param))


@pytest.fixture
def wal_db(wal_cluster: Cluster) -> Iterator[Deployment]:
    made = wal_cluster.deployment(f"w_{os.getpid()}_{next(_names)}")
    yield made
    _drop(wal_cluster, made)


@pytest.fixture
def wal18(wal_clusters: Callable[[int], Cluster]) -> Iterator[tuple[Cluster, Deployment]]:
    cluster = wal_clusters(18)
    made = cluster.deployment(f"w_{os.getpid()}_{next(_names)}")
    yield cluster, made
    _drop(cluster, made)


def _drop(cluster: Cluster, made: Deployment) -> None:
    """The database and its slot (slots are the server's, not the database's)."""
    name = made.admin.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (name,),
        )
    cluster.drop(made)


@pytest.fixture
async def owner(wal_db: Deployment) -> AsyncIterator[AsyncConn]:
    conn = await aconnect(wal_db.owner)
    yield conn
    await conn.close()


def sim_settings(sim: SimulatorThread) -> Settings:
    return fast_settings().model_copy(
        update={"providers": simulator_settings(sim, concurrency=4).providers}
    )


async def _tables(conn: AsyncConn) -> None:
    """docs (plain), events (partitioned, two partitions), notes (the trigger neighbour)."""
    await conn.execute(
        "CREATE TABLE docs (id int PRIMARY KEY, title text, body text, hits int DEFAULT 0)"
    )
    await conn.execute(
        "CREATE TABLE events (id int PRIMARY KEY, body text, hits int DEFAULT 0) "
        "PARTITION BY RANGE (id)"
    )
    await conn.execute("CREATE TABLE events_a PARTITION OF events FOR VALUES FROM (0) TO (5000)")
    await conn.execute(
        "CREATE TABLE events_b PARTITION OF events FOR VALUES FROM (5000) TO (20000)"
    )
    await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
    for table in ("docs", "notes"):
        await conn.execute(
            f"INSERT INTO {table} SELECT i, 'title ' || i, 'body of ' || i "
            "FROM generate_series(1, 100) i"
        )
    await conn.execute(
        "INSERT INTO events SELECT i, 'event ' || i FROM generate_series(1, 9999, 100) i"
    )


def _spec(name: str, columns: tuple[str, ...], capture: Capture, **kw: Any) -> Any:
    return targets.TargetSpec(
        name=name,
        table=name,
        columns=columns,
        model=kw.pop("model", "text-embedding-v4"),
        provider=kw.pop("provider", "sim"),
        dimensions=DIMS,
        capture=capture,
        **kw,
    )


async def _add_all(conn: AsyncConn, settings: Settings, **kw: Any) -> None:
    await targets.add_target(conn, settings, _spec("docs", ("title", "body"), Capture.WAL, **kw))
    await targets.add_target(conn, settings, _spec("events", ("body",), Capture.WAL, **kw))
    await targets.add_target(
        conn, settings, _spec("notes", ("title", "body"), Capture.TRIGGERS, **kw)
    )


async def caught_up(conn: AsyncConn) -> bool:
    """The slot has read everything written so far and the queue is empty."""
    return bool(
        await scalar(
            conn,
            "SELECT coalesce((SELECT s.confirmed_flush_lsn >= pg_current_wal_flush_lsn() "
            "                 FROM pg_replication_slots s WHERE s.database = current_database()),"
            "                true) "
            "AND NOT EXISTS (SELECT 1 FROM syncsvc.queue) "
            "AND NOT EXISTS (SELECT 1 FROM syncsvc.inbox)",
        )
    )


async def settle(conn: AsyncConn, timeout: float = 60) -> None:
    # The slot is compared with the WAL position at each check: a write after the last one
    # (syncsvc's own) moves it on, so wait for two consecutive successes.
    async def twice() -> bool:
        return await caught_up(conn) and await caught_up(conn)

    await wait_for(twice, timeout=timeout, interval=0.05)


async def assert_exact(conn: AsyncConn, table: str, template: str) -> int:
    """Every row with text has exactly the vector of its current text, no other vector."""
    cur = await conn.execute(f"SELECT id, {template} AS input FROM {table} ORDER BY id")
    rows = {r["id"]: r["input"] for r in await cur.fetchall()}
    cur = await conn.execute(f"SELECT id, embedding FROM syncsvc.{table}_embeddings ORDER BY id")
    vectors = {r["id"]: r["embedding"] for r in await cur.fetchall()}
    assert sorted(vectors) == sorted(rows), (table, set(vectors) ^ set(rows))
    for key, text in rows.items():
        got = np.asarray(vectors[key].to_list(), dtype=np.float32)
        assert np.allclose(got, expected(text, DIMS), atol=1e-6), (table, key, text)
    return len(rows)


DOCS = "concat(title, E'\\n\\n', body)"


async def assert_all_exact(conn: AsyncConn) -> None:
    await assert_exact(conn, "docs", DOCS)
    await assert_exact(conn, "events", "body")
    await assert_exact(conn, "notes", DOCS)


def _mixed_edits(url: str, edits: int, seed: int) -> None:
    """``edits`` writes by the application role: inserts, updates of embedded and other
    columns, key changes, deletes, on docs, on events through the parent and through each
    partition, and on notes; in transactions of 1 to 20 statements."""
    rng = random.Random(seed)
    done = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while done < edits:
            with conn.transaction():
                for _ in range(rng.randint(1, 20)):
                    done += 1
                    table = rng.choice(("docs", "docs", "events", "events_a", "events_b", "notes"))
                    key = (
                        rng.randint(1, 9999) if table.startswith("events") else rng.randint(1, 400)
                    )
                    if table == "events_a":
                        key = rng.randint(0, 4999)
                    elif table == "events_b":
                        key = rng.randint(5000, 9999)
                    op = rng.random()
                    text = f"edit {done} word{rng.randint(0, 50)}"
                    if op < 0.35:
                        if table in ("docs", "notes"):
                            conn.execute(
                                f"INSERT INTO {table} (id, title, body) VALUES (%s, %s, %s) "
                                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                                (key, f"t{key}", text),
                            )
                        else:
                            conn.execute(
                                f"INSERT INTO {table} (id, body) VALUES (%s, %s) "
                                "ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                                (key, text),
                            )
                    elif op < 0.65:
                        conn.execute(f"UPDATE {table} SET body = %s WHERE id = %s", (text, key))
                    elif op < 0.75 and table == "docs":
                        # A key change: the old key's vector must go, the new one come.
                        conn.execute(
                            "UPDATE docs SET id = id + 1000 WHERE id = %s "
                            "AND NOT EXISTS (SELECT 1 FROM docs WHERE id = %s + 1000)",
                            (key, key),
                        )
                    elif op < 0.85 and table != "notes":
                        conn.execute(f"UPDATE {table} SET hits = hits + 1 WHERE id = %s", (key,))
                    else:
                        conn.execute(f"DELETE FROM {table} WHERE id = %s", (key,))


async def test_wal_target_stays_exact_beside_a_trigger_target(
    wal_db: Deployment, owner: AsyncConn, simulator: SimulatorThread
) -> None:
    settings = sim_settings(simulator)
    await _tables(owner)
    await _add_all(owner, settings)
    # No trigger on the WAL targets' tables (nor on their partitions); notes has its four.
    triggers = await owner.execute(
        "SELECT c.relname, count(g.oid) AS n FROM pg_class c "
        "LEFT JOIN pg_trigger g ON g.tgrelid = c.oid AND NOT g.tgisinternal "
        "WHERE c.relname IN ('docs', 'events', 'events_a', 'events_b', 'notes') "
        "GROUP BY c.relname ORDER BY c.relname"
    )
    assert {r["relname"]: r["n"] for r in await triggers.fetchall()} == {
        "docs": 0,
        "events": 0,
        "events_a": 0,
        "events_b": 0,
        "notes": 4,
    }
    # The application's roles need nothing new.
    with psycopg.connect(wal_db.admin, autocommit=True) as admin:
        roles = admin.execute(
            "SELECT rolname, rolreplication, rolsuper FROM pg_roles "
            "WHERE rolname IN ('app_writer', 'app_reader') ORDER BY rolname"
        ).fetchall()
    assert roles == [("app_reader", False, False), ("app_writer", False, False)]

    build = functools.partial(build_provider, settings=settings)
    async with running_daemon(wal_db.owner, settings, provider_factory=build):
        await settle(owner)
        await assert_all_exact(owner)
        await asyncio.to_thread(_mixed_edits, wal_db.writer, 1000, seed=24)
        # A bulk COPY by the writer, into the plain table and through the partitioned parent.
        with psycopg.connect(wal_db.writer, autocommit=True) as writer:
            with writer.cursor().copy("COPY docs (id, title, body) FROM STDIN") as copy:
                for i in range(2000, 2600):
                    copy.write_row((i, f"copied {i}", f"bulk body {i % 37}"))
            with writer.cursor().copy("COPY events (id, body) FROM STDIN") as copy:
                for i in range(10000, 20000, 7):
                    copy.write_row((i, f"copied event {i % 41}"))
        await settle(owner)
        await assert_all_exact(owner)

        # TRUNCATE (the owner's: the writer may not), then rows again in the same transaction.
        async with owner.transaction():
            await owner.execute("TRUNCATE events")
            await owner.execute("INSERT INTO events VALUES (7, 'after the truncate', 0)")
        await settle(owner)
        assert await assert_exact(owner, "events", "body") == 1
        await assert_all_exact(owner)

        # No-op edits cost no API call: other columns, and embedded columns set to themselves.
        before = simulator.stats()["requests"]
        with psycopg.connect(wal_db.writer, autocommit=True) as writer:
            writer.execute("UPDATE docs SET hits = hits + 1")
            writer.execute("UPDATE docs SET title = title WHERE id < 50")
            writer.execute("UPDATE events SET hits = hits + 1")
        await settle(owner)
        assert simulator.stats()["requests"] == before
        await assert_all_exact(owner)


@pytest.mark.parametrize("kind", ["kill", "restart"])
def test_nothing_is_lost_across_a_daemon_kill_9_or_a_server_restart(
    wal18: tuple[Cluster, Deployment], kind: str
) -> None:
    cluster, made = wal18
    local = fast_settings()

    async def setup() -> None:
        async with await aconnect(made.owner) as conn:
            await _tables(conn)
            await _add_all(conn, local, model="local-hash", provider="local-hash")

    asyncio.run(setup())
    first = spawn_daemon(made.owner, poll_interval_seconds=0.2)
    second: subprocess.Popen[bytes] | None = None
    try:
        _mixed_edits(made.writer, 300, seed=1)
        _wait_sync(made.owner, "SELECT count(*) > 0 FROM syncsvc.docs_embeddings")
        if kind == "kill":
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            _mixed_edits(made.writer, 300, seed=2)
            second = spawn_daemon(made.owner, poll_interval_seconds=0.2)
        else:
            _mixed_edits(made.writer, 150, seed=2)
            cluster.restart(0.5)
            _mixed_edits(made.writer, 150, seed=3)
        _mixed_edits(made.writer, 200, seed=4)

        async def check() -> None:
            async with await aconnect(made.owner) as conn:
                await settle(conn, timeout=90)
                await assert_all_exact(conn)

        asyncio.run(check())
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


def _wait_sync(url: str, query: str) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(query).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.05)
    pytest.fail(f"never true: {query}")


async def _slot_and_publication(conn: AsyncConn) -> tuple[bool, bool]:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE database = current_database())"
        " AS slot, EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'syncsvc') AS pub"
    )
    row = await cur.fetchone()
    assert row is not None
    return row["slot"], row["pub"]


async def test_a_dropped_slot_pauses_and_a_recovery_sweep_restores_exactness(
    wal18: tuple[Cluster, Deployment],
) -> None:
    _, made = wal18
    local = fast_settings()
    async with await aconnect(made.owner) as conn:
        await _tables(conn)
        await _add_all(conn, local, model="local-hash", provider="local-hash")
        async with running_daemon(made.owner, local):
            await settle(conn)
        # The DBA drops the slot (or max_slot_wal_keep_size invalidates it) while edits go on.
        with psycopg.connect(made.admin, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = current_database()"
            )
        _mixed_edits(made.writer, 200, seed=5)
        reason = await slots.pause_if_lost(conn)
        assert reason is not None and "does not exist" in reason
        cur = await conn.execute("SELECT name, paused_reason FROM syncsvc.targets ORDER BY name")
        paused = {r["name"]: r["paused_reason"] for r in await cur.fetchall()}
        assert paused == {"docs": reason, "events": reason, "notes": None}
        # The daemon makes a new slot, sweeps, resumes: exact again, the trigger target too.
        async with running_daemon(made.owner, local):
            await settle(conn)
            await assert_all_exact(conn)
            cur = await conn.execute(
                "SELECT count(*) AS n FROM syncsvc.targets WHERE paused_reason IS NOT NULL"
            )
            assert (await cur.fetchone()) == {"n": 0}
            _mixed_edits(made.writer, 100, seed=6)
            await settle(conn)
            await assert_all_exact(conn)
        # Removing the last WAL target takes the slot and the publication with it.
        await targets.remove_target(conn, "docs")
        assert await _slot_and_publication(conn) == (True, True)
        await targets.remove_target(conn, "events")
        assert await _slot_and_publication(conn) == (False, False)
        await assert_exact(conn, "notes", DOCS)


async def test_wal_target_added_from_sql_gets_its_slot_from_the_reader(
    wal18: tuple[Cluster, Deployment],
) -> None:
    _, made = wal18
    local = fast_settings()
    async with await aconnect(made.owner) as conn:
        await _tables(conn)
        request = await scalar(
            conn,
            "SELECT syncsvc.add_target('docs', 'docs', '{title,body}', 'local-hash', 64, "
            "provider => 'local-hash', capture => 'wal')",
        )
        await actions.carry_out(conn, local)
        cur = await conn.execute(
            "SELECT state, error FROM syncsvc.requests WHERE id = %s", (request,)
        )
        assert await cur.fetchone() == {"state": "done", "error": None}
        assert (await targets.get_target(conn, "docs")).capture is Capture.WAL
        # A request's transaction cannot create a slot: the reader does, and sweeps.
        assert await _slot_and_publication(conn) == (False, True)
        result = await walreader.read_round(conn)
        assert result is not None and result.queued == 100
        assert await _slot_and_publication(conn) == (True, True)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="capture must be"):
            await conn.execute(
                "SELECT syncsvc.add_target('x', 'docs', '{title}', 'local-hash', 64, "
                "provider => 'local-hash', capture => 'logical')"
            )
        async with running_daemon(made.owner, local):
            _mixed_edits(made.writer, 100, seed=7)
            await settle(conn)
            await assert_exact(conn, "docs", DOCS)


async def test_missing_prerequisites_are_named_in_one_line(
    conn: AsyncConn, db_url: str, wal18: tuple[Cluster, Deployment]
) -> None:
    # The default servers: wal_level replica, an owner without REPLICATION, no WAL bound.
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    spec = _spec("docs", ("body",), Capture.WAL, model="local-hash", provider="local-hash")
    with pytest.raises(ValidationError) as refused:
        await targets.add_target(conn, fast_settings(), spec)
    message = str(refused.value)
    assert "\n" not in message
    assert "wal_level is replica, needs logical" in message
    assert "role syncsvc_owner lacks REPLICATION" in message
    missing, unsafe = await slots.problems(conn)
    assert len(missing) == 2 and len(unsafe) == 1 and "max_slot_wal_keep_size" in unsafe[0]
    # Nothing was created.
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 0
    # migrate says the same of a WAL target the server can no longer serve (say, restored
    # onto a server without wal_level = logical), in one line, without failing.
    plain = _spec("docs", ("body",), Capture.TRIGGERS, model="local-hash", provider="local-hash")
    await targets.add_target(conn, fast_settings(), plain)
    await conn.execute("UPDATE syncsvc.targets SET capture = 'wal'")
    line = await slots.check_existing(conn)
    assert line is not None and "\n" not in line
    assert line.startswith("WAL targets docs: wal_level is replica, needs logical")
    await conn.execute("UPDATE syncsvc.targets SET capture = 'triggers'")
    # A logical server whose slots are all taken (physical slots: instant to make).
    _, made = wal18
    with psycopg.connect(made.admin, autocommit=True) as admin:
        free = admin.execute(
            "SELECT current_setting('max_replication_slots')::int - count(*) "
            "FROM pg_replication_slots"
        ).fetchone()
        assert free is not None
        names = [f"full_{os.getpid()}_{i}" for i in range(free[0])]
        for name in names:
            admin.execute("SELECT pg_create_physical_replication_slot(%s)", (name,))
        try:
            async with await aconnect(made.owner) as owner:
                await owner.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
                with pytest.raises(
                    ValidationError,
                    match=r"max_replication_slots is \d+ with \d+ in use, needs one",
                ):
                    await targets.add_target(owner, fast_settings(), spec)
                # A key that is not the replica identity is refused too (deletes carry only it).
                await owner.execute(
                    "CREATE TABLE keyed (id int PRIMARY KEY, k int NOT NULL UNIQUE, body text)"
                )
        finally:
            for name in names:
                admin.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        async with await aconnect(made.owner) as owner:
            keyed = _spec(
                "keyed",
                ("body",),
                Capture.WAL,
                model="local-hash",
                provider="local-hash",
                pk=("k",),
            )
            with pytest.raises(ValidationError, match="replica identity to be the key"):
                await targets.add_target(owner, fast_settings(), keyed)
            await owner.execute("CREATE UNLOGGED TABLE fleeting (id int PRIMARY KEY, body text)")
            fleeting = _spec(
                "fleeting", ("body",), Capture.WAL, model="local-hash", provider="local-hash"
            )
            with pytest.raises(ValidationError, match="UNLOGGED: its writes are not in the WAL"):
                await targets.add_target(owner, fast_settings(), fleeting)


async def test_cli_adds_a_wal_target_and_status_and_metrics_show_its_slot(
    wal18: tuple[Cluster, Deployment], db_url: str
) -> None:
    _, made = wal18
    add = ("target", "add", "docs", "--table", "docs", "--columns", "title,body")
    add += ("--provider", "local-hash", "--model", "local-hash", "--dimensions", "64")
    async with await aconnect(made.owner) as conn:
        await _tables(conn)
        added = json.loads(await run_cli(made.owner, *add, "--capture", "wal", "--json"))
        assert added["capture"] == "wal"
        rows = {r["target"]: r for r in json.loads(await run_cli(made.owner, "status", "--json"))}
        assert rows["docs"]["capture"] == "wal"
        assert isinstance(rows["docs"]["wal_retained_bytes"], int)
        assert isinstance(rows["docs"]["wal_lag_bytes"], int)
        await metrics.refresh(conn)
        slot = await slots.slot_name(conn)
        assert metrics.REGISTRY.get_sample_value("syncsvc_wal_slot_lost", {"slot": slot}) == 0
        retained = metrics.REGISTRY.get_sample_value(
            "syncsvc_wal_slot_retained_bytes", {"slot": slot}
        )
        assert retained is not None and retained >= 0
        text = await run_cli(made.owner, "status")
        assert "docs (wal)" in text and f"WAL slot {slot}: retains" in text
        with psycopg.connect(made.admin, autocommit=True) as admin:
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        await slots.pause_if_lost(conn)
        await metrics.refresh(conn)
        assert metrics.REGISTRY.get_sample_value("syncsvc_wal_slot_lost", {"slot": slot}) == 1
        assert "missing or invalidated" in await run_cli(made.owner, "status")
    # On a server without wal_level = logical: refused in one line saying what is missing.
    async with await aconnect(db_url) as conn:
        await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    refused = await run_cli(db_url, *add, "--capture", "wal", code=1)
    assert "wal_level is replica, needs logical" in refused
    assert "lacks REPLICATION" in refused


def _client_adds(url: str) -> str:
    with Client(url, fast_settings()) as client:
        target = client.add_target(
            "events",
            "events",
            ["body"],
            provider="local-hash",
            model="local-hash",
            dimensions=DIMS,
            capture="wal",
        )
    return target.capture.value


async def test_the_slot_moves_only_after_the_keys_are_stored(
    wal18: tuple[Cluster, Deployment],
) -> None:
    _, made = wal18
    async with await aconnect(made.owner) as conn:
        await _tables(conn)
        assert await asyncio.to_thread(_client_adds, made.owner) == "wal"
        await conn.execute("DELETE FROM syncsvc.queue")  # the first sweep's: not under test
        slot = await slots.slot_name(conn)
        position = "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s"
        before = await scalar(conn, position, (slot,))
        with psycopg.connect(made.writer, autocommit=True) as writer:
            writer.execute("INSERT INTO events VALUES (42, 'stored first', 0)")
        # The queue cannot take the keys now (a lock): the read fails, the slot stays put.
        async with await aconnect(made.owner) as blocker, blocker.transaction():
            await blocker.execute("LOCK TABLE syncsvc.inbox IN ACCESS EXCLUSIVE MODE")
            await conn.execute("SET statement_timeout = '300ms'")
            with pytest.raises(psycopg.errors.QueryCanceled):
                await walreader.read_round(conn)
            await conn.execute("RESET statement_timeout")
        assert await scalar(conn, position, (slot,)) == before
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0
        # One reader at a time: while another session holds the reader lock, nothing is read.
        async with await aconnect(made.owner) as other:
            await other.execute("SELECT pg_advisory_lock(%s)", (wal.READER_LOCK,))
            assert await walreader.read_round(conn) == wal.ReadResult(0, 0, False)
            await other.execute("SELECT pg_advisory_unlock(%s)", (wal.READER_LOCK,))
        # Read again: the change is still there, stored, and only then the slot moves.
        result = await walreader.read_round(conn)
        assert result is not None and result.queued == 1
        assert await scalar(conn, "SELECT pks FROM syncsvc.inbox") == [[42]]
        assert await scalar(conn, position, (slot,)) > before


async def test_partitions_attached_detached_or_dropped_under_a_wal_target(
    wal18: tuple[Cluster, Deployment],
) -> None:
    """ATTACH, DETACH and DROP move rows without a row in the WAL: the partition reconcile
    sweeps an attached one and removes a detached or dropped one's vectors."""
    _, made = wal18
    local = fast_settings()
    async with await aconnect(made.owner) as conn:
        await _tables(conn)
        await _add_all(conn, local, model="local-hash", provider="local-hash")
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.partition_changes()") == 0
        async with running_daemon(made.owner, local):
            await settle(conn)
            await conn.execute(
                "CREATE TABLE events_c (id int PRIMARY KEY, body text, hits int DEFAULT 0)"
            )
            await conn.execute(
                "INSERT INTO events_c SELECT i, 'attached ' || i "
                "FROM generate_series(20000, 20049) i"
            )
            await conn.execute(
                "ALTER TABLE events ATTACH PARTITION events_c FOR VALUES FROM (20000) TO (30000)"
            )
            await conn.execute("ALTER TABLE events DETACH PARTITION events_a")
            await conn.execute("DROP TABLE events_b")

            async def reconciled() -> bool:
                vectors = await scalar(conn, "SELECT count(*) FROM syncsvc.events_embeddings")
                rows = await scalar(conn, "SELECT count(*) FROM events")
                changes = await scalar(conn, "SELECT count(*) FROM syncsvc.partition_changes()")
                return bool(vectors == rows == 50 and changes == 0)

            await wait_for(reconciled, timeout=60)
            await settle(conn)
            await assert_all_exact(conn)
            # Writes to the attached partition are in the WAL like any other.
            with psycopg.connect(made.writer, autocommit=True) as writer:
                writer.execute("UPDATE events_c SET body = 'changed ' || id WHERE id < 20010")
                writer.execute("INSERT INTO events VALUES (20100, 'through the parent', 0)")
            await settle(conn)
            await assert_all_exact(conn)
