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
import re
import signal
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator

import psycopg
import pytest
from psycopg.rows import dict_row

from syncsvc.capture import slots, targets, wal
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import Capture
from syncsvc.core.types import AsyncConn
from syncsvc.daemon import actions, walreader
from syncsvc.db.database import aconnect
from syncsvc.observe import metrics
from syncsvc.providers.registry import build_provider
from syncsvc.simulator import SimulatorThread
from tests.conftest import Cluster, Deployment, database_url
from tests.helpers import fast_settings, running_daemon, scalar, spawn_daemon, wait_for
from tests.test_promote import run_cli
from tests.wal_support import (
    DIMS,
    DOCS,
    add_all,
    admin_rows,
    assert_all_exact,
    assert_exact,
    client_adds,
    drop_with_slots,
    make_tables,
    mixed_edits,
    settle,
    sim_settings,
    slot_and_publication,
    target_spec,
    wait_sync,
)

_names = itertools.count()


@pytest.fixture(params=[16, 18], ids=["pg16", "pg18"])
def wal_cluster(request: pytest.FixtureRequest, wal_clusters: Callable[[int], Cluster]) -> Cluster:
    return wal_clusters(int(request.param))


@pytest.fixture
def wal_db(wal_cluster: Cluster) -> Iterator[Deployment]:
    made = wal_cluster.deployment(f"w_{os.getpid()}_{next(_names)}")
    yield made
    drop_with_slots(wal_cluster, made)


@pytest.fixture
def wal18(wal_clusters: Callable[[int], Cluster]) -> Iterator[tuple[Cluster, Deployment]]:
    cluster = wal_clusters(18)
    made = cluster.deployment(f"w_{os.getpid()}_{next(_names)}")
    yield cluster, made
    drop_with_slots(cluster, made)


@pytest.fixture
async def owner(wal_db: Deployment) -> AsyncIterator[AsyncConn]:
    conn = await aconnect(wal_db.owner)
    yield conn
    await conn.close()


async def test_wal_target_stays_exact_beside_a_trigger_target(
    wal_db: Deployment, owner: AsyncConn, simulator: SimulatorThread
) -> None:
    settings = sim_settings(simulator)
    await make_tables(owner)
    await add_all(owner, settings)
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
        await asyncio.to_thread(mixed_edits, wal_db.writer, 1000, seed=24)
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
            await make_tables(conn)
            await add_all(conn, local, model="local-hash", provider="local-hash")

    asyncio.run(setup())
    first = spawn_daemon(made.owner, poll_interval_seconds=0.2)
    second: subprocess.Popen[bytes] | None = None
    try:
        mixed_edits(made.writer, 300, seed=1)
        wait_sync(made.owner, "SELECT count(*) > 0 FROM syncsvc.docs_embeddings")
        if kind == "kill":
            first.send_signal(signal.SIGKILL)
            first.wait(10)
            mixed_edits(made.writer, 300, seed=2)
            second = spawn_daemon(made.owner, poll_interval_seconds=0.2)
        else:
            mixed_edits(made.writer, 150, seed=2)
            cluster.restart(0.5)
            mixed_edits(made.writer, 150, seed=3)
        mixed_edits(made.writer, 200, seed=4)

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


async def test_a_dropped_slot_pauses_and_a_recovery_sweep_restores_exactness(
    wal18: tuple[Cluster, Deployment],
) -> None:
    _, made = wal18
    local = fast_settings()
    async with await aconnect(made.owner) as conn:
        await make_tables(conn)
        await add_all(conn, local, model="local-hash", provider="local-hash")
        async with running_daemon(made.owner, local):
            await settle(conn)
        # The DBA drops the slot (or max_slot_wal_keep_size invalidates it) while edits go on.
        with psycopg.connect(made.admin, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE database = current_database()"
            )
        mixed_edits(made.writer, 200, seed=5)
        reason = await slots.pause_if_lost(conn)
        assert reason is not None and "does not exist" in reason
        cur = await conn.execute("SELECT name, paused_reason FROM syncsvc.targets ORDER BY name")
        paused = {r["name"]: r["paused_reason"] for r in await cur.fetchall()}
        assert paused == {"docs": reason, "events": reason, "notes": None}
        # The daemon makes a new slot, sweeps, resumes: exact again, the trigger target too.
        # (Its start-up resumes and sweeps them first, so "settled" alone could be seen before
        # the reader found the slot missing: wait for the new slot with nothing paused.)
        async with running_daemon(made.owner, local):
            await wait_for(lambda: _recovered(conn), timeout=60)
            await settle(conn)
            await assert_all_exact(conn)
            cur = await conn.execute(
                "SELECT count(*) AS n FROM syncsvc.targets WHERE paused_reason IS NOT NULL"
            )
            assert (await cur.fetchone()) == {"n": 0}
            mixed_edits(made.writer, 100, seed=6)
            await settle(conn)
            await assert_all_exact(conn)
        # Removing the last WAL target takes the slot and the publication with it.
        await targets.remove_target(conn, "docs")
        assert await slot_and_publication(conn) == (True, True)
        await targets.remove_target(conn, "events")
        assert await slot_and_publication(conn) == (False, False)
        await assert_exact(conn, "notes", DOCS)
        # A recovery that read the slot as lost just before that removal committed (it found
        # no slot to drop) must not leave a new slot holding WAL with nobody reading it.
        assert await slots.recover(conn, reason) == 0
        assert await slot_and_publication(conn) == (False, False)


async def _recovered(conn: AsyncConn) -> bool:
    """A new slot exists (its snapshot taken) and no target is paused any more."""
    return bool(
        await scalar(
            conn,
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.database = "
            "current_database() AND s.confirmed_flush_lsn IS NOT NULL) AND NOT EXISTS "
            "(SELECT 1 FROM syncsvc.targets WHERE paused_reason IS NOT NULL)",
        )
    )


async def test_wal_target_added_from_sql_gets_its_slot_from_the_reader(
    wal18: tuple[Cluster, Deployment],
) -> None:
    _, made = wal18
    local = fast_settings()
    async with await aconnect(made.owner) as conn:
        await make_tables(conn)
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
        assert await slot_and_publication(conn) == (False, True)
        result = await walreader.read_round(conn)
        assert result is not None and result.queued == 100
        assert await slot_and_publication(conn) == (True, True)
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="capture must be"):
            await conn.execute(
                "SELECT syncsvc.add_target('x', 'docs', '{title}', 'local-hash', 64, "
                "provider => 'local-hash', capture => 'logical')"
            )
        async with running_daemon(made.owner, local):
            mixed_edits(made.writer, 100, seed=7)
            await settle(conn)
            await assert_exact(conn, "docs", DOCS)


async def test_missing_prerequisites_are_named_in_one_line(
    conn: AsyncConn, db_url: str, wal18: tuple[Cluster, Deployment]
) -> None:
    # The default servers: wal_level replica, an owner without REPLICATION, no WAL bound.
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    spec = target_spec("docs", ("body",), Capture.WAL, model="local-hash", provider="local-hash")
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
    local = {"model": "local-hash", "provider": "local-hash"}
    plain = target_spec("docs", ("body",), Capture.TRIGGERS, **local)
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
            keyed = target_spec(
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
            fleeting = target_spec(
                "fleeting", ("body",), Capture.WAL, model="local-hash", provider="local-hash"
            )
            with pytest.raises(ValidationError, match="UNLOGGED: its writes are not in the WAL"):
                await targets.add_target(owner, fast_settings(), fleeting)
            # A partition without a replica identity: PostgreSQL would refuse its UPDATEs.
            await owner.execute(
                "CREATE TABLE parts (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)"
            )
            await owner.execute(
                "CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (9)"
            )
            await owner.execute("ALTER TABLE parts_a REPLICA IDENTITY NOTHING")
            parts = target_spec(
                "parts", ("body",), Capture.WAL, model="local-hash", provider="local-hash"
            )
            with pytest.raises(ValidationError, match="replica identity on every partition"):
                await targets.add_target(owner, fast_settings(), parts)
            # A generated column is not in the WAL stream (trigger capture reads it).
            await owner.execute(
                "CREATE TABLE derived (id int PRIMARY KEY, a text, "
                "b text GENERATED ALWAYS AS (upper(a)) STORED)"
            )
            derived = target_spec(
                "derived", ("b",), Capture.WAL, model="local-hash", provider="local-hash"
            )
            with pytest.raises(ValidationError, match="cannot read generated column 'b'"):
                await targets.add_target(owner, fast_settings(), derived)
            assert await scalar(owner, "SELECT count(*) FROM syncsvc.targets") == 0
            assert await slot_and_publication(owner) == (False, False)
    # A database not in UTF8: its text would arrive in another encoding.
    latin = f"latin_{os.getpid()}"
    with psycopg.connect(made.admin, autocommit=True) as admin:
        admin.execute(
            f"CREATE DATABASE {latin} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
            "TEMPLATE template0"
        )
    try:
        url = database_url(made.admin, latin)
        async with await psycopg.AsyncConnection.connect(
            url, autocommit=True, row_factory=dict_row
        ) as other:
            missing, _ = await slots.problems(other)
        assert any("encoding is LATIN1, WAL capture reads UTF8 only" in m for m in missing)
    finally:
        with psycopg.connect(made.admin, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {latin}")


async def test_cli_adds_a_wal_target_and_status_and_metrics_show_its_slot(
    wal18: tuple[Cluster, Deployment], db_url: str
) -> None:
    _, made = wal18
    add = ("target", "add", "docs", "--table", "docs", "--columns", "title,body")
    add += ("--provider", "local-hash", "--model", "local-hash", "--dimensions", "64")
    async with await aconnect(made.owner) as conn:
        await make_tables(conn)
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
        # The admin page: the WAL target's slot figures; nothing slot-related for a trigger one.
        notes = target_spec(
            "notes", ("body",), Capture.TRIGGERS, model="local-hash", provider="local-hash"
        )
        await targets.add_target(conn, fast_settings(), notes)
        page = await admin_rows(conn)
        assert 'data-col="capture">wal<br>' in page["docs"] and "slot retains" in page["docs"]
        assert re.search(r'data-retained="\d+" data-lag="\d+">slot retains', page["docs"])
        assert 'data-col="capture">triggers</td>' in page["notes"]
        assert "slot" not in page["notes"] and "WAL" not in page["notes"]
        with psycopg.connect(made.admin, autocommit=True) as admin:
            admin.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        await slots.pause_if_lost(conn)
        await metrics.refresh(conn)
        assert metrics.REGISTRY.get_sample_value("syncsvc_wal_slot_lost", {"slot": slot}) == 1
        assert "missing or invalidated" in await run_cli(made.owner, "status")
        page = await admin_rows(conn)
        assert f"paused (replication slot {slot} does not exist" in page["docs"]
        assert "no slot" in page["docs"]
        assert "paused" not in page["notes"] and "slot" not in page["notes"]
    # On a server without wal_level = logical: refused in one line saying what is missing.
    async with await aconnect(db_url) as conn:
        await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    refused = await run_cli(db_url, *add, "--capture", "wal", code=1)
    assert "wal_level is replica, needs logical" in refused
    assert "lacks REPLICATION" in refused


async def test_the_slot_moves_only_after_the_keys_are_stored(
    wal18: tuple[Cluster, Deployment],
) -> None:
    _, made = wal18
    async with await aconnect(made.owner) as conn:
        await make_tables(conn)
        assert await asyncio.to_thread(client_adds, made.owner) == "wal"
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
        await make_tables(conn)
        await add_all(conn, local, model="local-hash", provider="local-hash")
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


async def _published(conn: AsyncConn) -> list[str]:
    cur = await conn.execute(
        "SELECT tablename FROM pg_publication_tables WHERE pubname = 'syncsvc' ORDER BY 1"
    )
    return [r["tablename"] for r in await cur.fetchall()]


async def test_a_table_that_loses_its_key_leaves_the_publication_so_its_writes_go_on(
    wal18: tuple[Cluster, Deployment],
) -> None:
    """PostgreSQL refuses UPDATE and DELETE on a published table without a replica identity.
    When the DBA drops a WAL target's key, syncsvc takes the table out of its publication (the
    application's writes go on) and pauses that target; once the key is back the table is
    published again, swept and resumed. The other WAL target and the trigger target never
    notice."""
    _, made = wal18
    local = fast_settings()
    async with await aconnect(made.owner) as conn:
        await make_tables(conn)
        await add_all(conn, local, model="local-hash", provider="local-hash")
        # A second WAL target on the same table: it must come back with the first.
        titles = targets.TargetSpec(
            name="titles",
            table="docs",
            columns=("title",),
            model="local-hash",
            provider="local-hash",
            dimensions=DIMS,
            capture=Capture.WAL,
        )
        await targets.add_target(conn, local, titles)
        async with running_daemon(made.owner, local):
            await settle(conn)
        await conn.execute("ALTER TABLE docs DROP CONSTRAINT docs_pkey")  # the DBA's DDL
        # Why it matters: until syncsvc reacts, PostgreSQL refuses the application.
        refused = pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState)
        with psycopg.connect(made.writer, autocommit=True) as writer, refused:
            writer.execute("UPDATE docs SET body = body || ' refused' WHERE id = 1")
        paused = await slots.guard_publication(conn)
        assert sorted(paused) == ["docs", "titles"]
        assert await _published(conn) == ["events"]
        cur = await conn.execute("SELECT name, paused_reason FROM syncsvc.targets ORDER BY name")
        reasons = {r["name"]: r["paused_reason"] for r in await cur.fetchall()}
        assert reasons["events"] is None and reasons["notes"] is None
        assert reasons["docs"] is not None and "replica identity" in reasons["docs"]
        assert reasons["titles"] == reasons["docs"]
        with psycopg.connect(made.writer, autocommit=True) as writer:
            writer.execute("UPDATE docs SET body = body || ' edited' WHERE id % 3 = 0")
            writer.execute("DELETE FROM docs WHERE id % 10 = 1")
            writer.execute("UPDATE notes SET body = body || ' edited' WHERE id % 4 = 0")
        mixed_edits_on_events = "UPDATE events SET body = body || ' edited' WHERE id % 5 = 0"
        with psycopg.connect(made.writer, autocommit=True) as writer:
            writer.execute(mixed_edits_on_events)
        assert await slots.guard_publication(conn) == []  # still no key: nothing to redo
        # Resumed by hand while the key is still missing: paused again, never left uncaptured.
        await conn.execute("SELECT syncsvc.resume_target('docs')")
        assert await slots.guard_publication(conn) == ["docs"]
        assert await _published(conn) == ["events"]
        # One partition without an identity is enough for PostgreSQL to refuse its rows.
        await conn.execute("ALTER TABLE events_a REPLICA IDENTITY NOTHING")
        assert await slots.guard_publication(conn) == ["events"]
        assert await _published(conn) == []
        # The parent still has its key, but the partition has none: it stays out (published
        # again, the partition's UPDATEs would be refused until the next look).
        assert await slots.guard_publication(conn) == []
        assert await _published(conn) == []
        with psycopg.connect(made.writer, autocommit=True) as writer:
            writer.execute("UPDATE events SET body = body || ' again' WHERE id % 7 = 0")
            writer.execute("UPDATE events_a SET body = body || ' direct' WHERE id % 9 = 0")
        await conn.execute("ALTER TABLE events_a REPLICA IDENTITY DEFAULT")
        await conn.execute("ALTER TABLE docs ADD PRIMARY KEY (id)")  # the DBA puts it back
        # One table's trouble (its sweep cannot read it) keeps its targets paused and leaves
        # the other's comeback and the slot alone.
        await conn.execute("REVOKE SELECT ON docs FROM syncsvc_owner")
        assert await slots.guard_publication(conn) == []
        assert await _published(conn) == ["docs", "events"]
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets "
                                  "WHERE paused_reason IS NOT NULL") == 2  # fmt: skip
        result = await walreader.read_round(conn)
        assert result is not None
        await conn.execute("GRANT SELECT ON docs TO syncsvc_owner")
        async with running_daemon(made.owner, local):
            await wait_for(lambda: _none_paused(conn), timeout=60)
            await settle(conn)
            assert await _published(conn) == ["docs", "events"]
            await assert_all_exact(conn)
            await assert_exact(conn, "titles", "title", source="docs")


async def _none_paused(conn: AsyncConn) -> bool:
    return not await scalar(
        conn, "SELECT count(*) FROM syncsvc.targets WHERE paused_reason IS NOT NULL"
    )
