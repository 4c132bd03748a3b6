"""Every write the application makes is captured: partitioned tables written through the parent
or any partition (at any depth), partitions created, attached, detached or dropped after
``target add``, partition children, generated columns. On PostgreSQL 16 and 18, as deployed:
the owner registers and runs syncsvc, the writer role writes, and ``notes`` stays a healthy
second target throughout.

The periodic sweep is pushed out of reach (``sweep_interval_seconds``): only the capture
triggers and the daemon's partition reconciliation can produce the expected vectors."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from syncsvc.api.client import AsyncClient
from syncsvc.capture import drift, targets
from syncsvc.core.errors import ValidationError
from syncsvc.core.types import AsyncConn
from syncsvc.db.database import aconnect
from syncsvc.observe import metrics, status
from syncsvc.web import admin
from tests.conftest import Cluster, Deployment
from tests.helpers import expected, fast_settings, running_daemon, scalar, text_targets, wait_for
from tests.test_sql_admin import request_and_wait

DIMS = 64
# No periodic sweep, so only the partition poll can pass these tests; that poll runs every
# lease/3 s (capped at 5 s): a short lease makes it 1 s, and a live daemon's claims are never
# taken over whatever the lease.
NO_PERIODIC_SWEEP = fast_settings(sweep_interval_seconds=1e9, lease_seconds=3)
_names = itertools.count()


@pytest.fixture(params=[16, 18], ids=lambda v: f"pg{v}")
def versioned(
    request: pytest.FixtureRequest, clusters: Callable[[int | None], Cluster]
) -> Iterator[tuple[int, Deployment]]:
    cluster = clusters(request.param)
    made = cluster.deployment(f"part_{request.param}_{os.getpid()}_{next(_names)}")
    yield request.param, made
    cluster.drop(made)


def cli(url: str, *args: str) -> tuple[int, str]:
    from syncsvc.cli import app

    result = CliRunner().invoke(app, ["--database-url", url, *args])
    return result.exit_code, " ".join(result.output.split())


async def _setup(conn: AsyncConn) -> None:
    """``events``: range-partitioned two levels deep, 40 rows; ``notes``: the neighbour."""
    await conn.execute(
        "CREATE TABLE events (id int PRIMARY KEY, title text, body text) PARTITION BY RANGE (id)"
    )
    await conn.execute("CREATE TABLE events_p0 PARTITION OF events FOR VALUES FROM (0) TO (100)")
    await conn.execute(
        "CREATE TABLE events_p1 PARTITION OF events FOR VALUES FROM (100) TO (200) "
        "PARTITION BY RANGE (id)"
    )
    await conn.execute(
        "CREATE TABLE events_p1a PARTITION OF events_p1 FOR VALUES FROM (100) TO (150)"
    )
    await conn.execute(
        "CREATE TABLE events_p1b PARTITION OF events_p1 FOR VALUES FROM (150) TO (200)"
    )
    await conn.execute(
        "INSERT INTO events SELECT i, 'title ' || i, 'body ' || i "
        "FROM generate_series(1, 20) i UNION ALL "
        "SELECT i, 'title ' || i, 'body ' || i FROM generate_series(101, 120) i"
    )
    spec = targets.TargetSpec(
        name="events", table="events", columns=("title", "body"), model="local-hash",
        dimensions=DIMS,
    )  # fmt: skip
    await targets.add_target(conn, fast_settings(), spec)
    await text_targets(conn, ("notes",), rows=10, title="title ", body="body ", dimensions=DIMS)


async def _exact(conn: AsyncConn, table: str, view: str) -> bool:
    """One vector per source row, each the embedding of the row's current text."""
    cur = await conn.execute(f"SELECT id, title, body FROM {table}")
    rows = {r["id"]: f"{r['title'] or ''}\n\n{r['body'] or ''}" for r in await cur.fetchall()}
    cur = await conn.execute(f"SELECT id, embedding FROM syncsvc.{view}_embeddings")
    vectors = {r["id"]: r["embedding"].to_numpy() for r in await cur.fetchall()}
    if set(rows) != set(vectors):
        return False
    return all(np.allclose(vectors[k], expected(text, DIMS), atol=1e-6) for k, text in rows.items())


async def _settled(conn: AsyncConn) -> bool:
    return await _exact(conn, "events", "events") and await _exact(conn, "notes", "notes")


async def _neighbour_healthy(conn: AsyncConn, writer: psycopg.Connection[Any], text: str) -> None:
    writer.execute("UPDATE notes SET body = %s WHERE id = 1", (text,))
    await wait_for(lambda: _exact(conn, "notes", "notes"), timeout=30)
    row = next(s for s in await status.collect(conn) if s.target == "notes")
    assert row.paused_reason is None and row.drift is None and row.failed == 0


async def _drift(conn: AsyncConn, target: str) -> str | None:
    return next(s for s in await status.collect(conn) if s.target == target).drift


async def test_writes_naming_any_partition_are_captured(versioned: tuple[int, Deployment]) -> None:
    version, deployment = versioned
    async with await aconnect(deployment.owner) as conn:
        assert conn.info.server_version // 10000 == version
        await _setup(conn)
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            await wait_for(lambda: _settled(conn), timeout=60)
            with psycopg.connect(deployment.writer, autocommit=True) as writer:
                # Partition-aware ETL names the partitions, at every level.
                writer.execute("INSERT INTO events_p0 VALUES (50, 'title 50', 'direct leaf')")
                writer.execute("INSERT INTO events_p1 VALUES (160, 'title 160', 'mid level')")
                writer.execute("UPDATE events_p1a SET body = 'leaf edit' WHERE id = 105")
                writer.execute("DELETE FROM events_p1b WHERE id = 160")
                writer.execute("DELETE FROM events_p0 WHERE id = 2")
                writer.execute(
                    "UPDATE events_p1 SET body = 'moved within' , id = 170 WHERE id = 110"
                )
                # Keys moving between partitions through the parent end with one vector each.
                writer.execute("UPDATE events SET id = id + 150, body = 'moved' WHERE id IN (3, 4)")
                writer.execute("UPDATE events SET body = 'parent edit' WHERE id = 5")
                await wait_for(lambda: _settled(conn), timeout=60)
                assert await scalar(conn, "SELECT count(*) FROM syncsvc.events_embeddings") == (
                    await scalar(conn, "SELECT count(*) FROM events")
                )
                await _neighbour_healthy(conn, writer, "still healthy")


async def test_partition_maintenance_is_reconciled_at_once(
    versioned: tuple[int, Deployment],
) -> None:
    _, deployment = versioned
    async with await aconnect(deployment.owner) as conn:
        await _setup(conn)
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            await wait_for(lambda: _settled(conn), timeout=60)
            with psycopg.connect(deployment.writer, autocommit=True) as writer:
                # CREATE … PARTITION OF, then the application writes to it at once.
                await conn.execute(
                    "CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM (200) TO (300)"
                )
                writer.execute(
                    "INSERT INTO events_p2 SELECT i, 'title ' || i, 'new partition ' || i "
                    "FROM generate_series(201, 230) i"
                )
                await wait_for(lambda: _settled(conn), timeout=60)
                writer.execute("UPDATE events_p2 SET body = 'edited in p2' WHERE id = 210")
                writer.execute("DELETE FROM events_p2 WHERE id = 211")
                await wait_for(lambda: _settled(conn), timeout=60)

                # ATTACH a loaded table: its 30 rows are swept at once.
                await conn.execute("CREATE TABLE events_p3 (LIKE events INCLUDING ALL)")
                await conn.execute(
                    "INSERT INTO events_p3 SELECT i, 'title ' || i, 'attached ' || i "
                    "FROM generate_series(301, 330) i"
                )
                await conn.execute(
                    "ALTER TABLE events ATTACH PARTITION events_p3 FOR VALUES FROM (300) TO (400)"
                )
                await wait_for(lambda: _settled(conn), timeout=60)
                writer.execute("UPDATE events_p3 SET body = 'edited in p3' WHERE id = 301")
                await wait_for(lambda: _settled(conn), timeout=60)

                # DETACH: its vectors go at once; writes to the detached table are not the
                # target's any more.
                await conn.execute("ALTER TABLE events DETACH PARTITION events_p0")
                await wait_for(lambda: _settled(conn), timeout=60)
                writer.execute("INSERT INTO events_p0 VALUES (77, 'title 77', 'not tracked')")
                writer.execute("UPDATE events_p1a SET body = 'after detach' WHERE id = 101")
                await wait_for(lambda: _settled(conn), timeout=60)

                # DETACH CONCURRENTLY (outside a transaction), DROP, TRUNCATE of a partition.
                await conn.execute("ALTER TABLE events DETACH PARTITION events_p2 CONCURRENTLY")
                await wait_for(lambda: _settled(conn), timeout=60)
                await conn.execute("DROP TABLE events_p3")
                await wait_for(lambda: _settled(conn), timeout=60)
                await conn.execute("TRUNCATE events_p1a")
                await wait_for(lambda: _settled(conn), timeout=60)
                await conn.execute("ALTER TABLE events ATTACH PARTITION events_p0 "
                                   "FOR VALUES FROM (0) TO (100)")  # fmt: skip
                await wait_for(lambda: _settled(conn), timeout=60)
                writer.execute("UPDATE events_p0 SET body = 'back again' WHERE id = 77")
                await wait_for(lambda: _settled(conn), timeout=60)
                await wait_for(lambda: _no_drift(conn), timeout=30)
                await _neighbour_healthy(conn, writer, "healthy after maintenance")
            # The detached tables no longer carry the capture triggers.
            assert (
                await scalar(
                    conn,
                    "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'events_p2'::regclass "
                    "AND tgname LIKE 'syncsvc%%'",
                )
                == 0
            )


async def _no_drift(conn: AsyncConn) -> bool:
    return all(s.drift is None for s in await status.collect(conn))


async def test_drift_is_visible_until_the_daemon_fixes_it(
    versioned: tuple[int, Deployment],
) -> None:
    _, deployment = versioned
    async with await aconnect(deployment.owner) as conn:
        await _setup(conn)
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            await wait_for(lambda: _settled(conn), timeout=60)
        # No daemon runs: the change waits, and every surface says so.
        await conn.execute("CREATE TABLE events_p3 (LIKE events INCLUDING ALL)")
        await conn.execute(
            "INSERT INTO events_p3 SELECT i, 't ' || i, 'b ' || i FROM generate_series(301, 330) i"
        )
        await conn.execute(
            "ALTER TABLE events ATTACH PARTITION events_p3 FOR VALUES FROM (300) TO (400)"
        )
        note = "partition public.events_p3 attached; sweeping"
        assert await _drift(conn, "events") == note
        assert await _drift(conn, "notes") is None
        code, out = await asyncio.to_thread(cli, deployment.owner, "target", "check", "events")
        assert code == 0 and note in out
        code, out = await asyncio.to_thread(cli, deployment.owner, "status", "--json")
        assert code == 0 and note in out
        await metrics.refresh(conn)
        assert metrics.REGISTRY.get_sample_value("syncsvc_target_drift", {"target": "events"}) == 1
        assert metrics.REGISTRY.get_sample_value("syncsvc_target_drift", {"target": "notes"}) == 0
        page = admin.render(await admin.gather(conn, []))
        assert note in page
        await conn.execute("ALTER TABLE events DETACH PARTITION events_p0")
        assert "partition public.events_p0 detached; removing its vectors" in (
            await _drift(conn, "events") or ""
        )
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            await wait_for(lambda: _settled(conn), timeout=60)
            await wait_for(lambda: _no_drift(conn), timeout=30)
            await metrics.refresh(conn)
            drifting = metrics.REGISTRY.get_sample_value(
                "syncsvc_target_drift", {"target": "events"}
            )
            assert drifting == 0


async def test_a_partition_is_refused_naming_its_parent(versioned: tuple[int, Deployment]) -> None:
    _, deployment = versioned
    async with await aconnect(deployment.owner) as conn:
        await _setup(conn)
        spec = targets.TargetSpec(
            name="pchild", table="events_p1a", columns=("title",), model="local-hash",
            dimensions=DIMS,
        )  # fmt: skip
        reason = "public.events_p1a is a partition of public.events"
        with pytest.raises(ValidationError, match=f"{reason}.*register public.events instead"):
            await targets.add_target(conn, fast_settings(), spec)
        code, out = await asyncio.to_thread(
            cli, deployment.owner, "target", "add", "pchild", "--table", "events_p1", "--columns",
            "title", "--provider", "local-hash", "--model", "local-hash", "--dimensions", str(DIMS),
        )  # fmt: skip
        assert code != 0 and "public.events_p1 is a partition of public.events" in out
        assert "register public.events instead" in out
        # SQL callers and the Python client get the same one-line reason (one implementation).
        async with AsyncClient(deployment.owner, fast_settings()) as client:
            with pytest.raises(ValidationError, match=reason):
                await client.add_target(
                    "pchild", "events_p1a", ["title"], model="local-hash", dimensions=DIMS,
                    provider="local-hash",
                )  # fmt: skip
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            with pytest.raises(psycopg.Error, match=f"{reason}.*register public.events instead"):
                await asyncio.to_thread(
                    request_and_wait,
                    deployment.owner,
                    "SELECT syncsvc.add_target('pchild', 'events_p1a', '{title}', 'local-hash', "
                    f"{DIMS}, 'local-hash')",
                )
        # Inheritance children miss writes through their parent the same way.
        await conn.execute("CREATE TABLE base (id int PRIMARY KEY, title text)")
        await conn.execute("CREATE TABLE heir (id int PRIMARY KEY, title text) INHERITS (base)")
        for table, words in (("heir", "inherits from public.base"), ("base", "inheritance child")):
            spec = targets.TargetSpec(
                name="inh", table=table, columns=("title",), model="local-hash", dimensions=DIMS
            )
            with pytest.raises(ValidationError, match=words):
                await targets.add_target(conn, fast_settings(), spec)
        # A view's writes reach no trigger of it at all.
        await conn.execute("CREATE VIEW recent AS SELECT * FROM events")
        spec = targets.TargetSpec(
            name="view", table="recent", columns=("title",), model="local-hash", dimensions=DIMS
        )
        with pytest.raises(ValidationError, match="statement triggers cannot capture"):
            await targets.add_target(conn, fast_settings(), spec)
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 2


async def test_generated_columns(versioned: tuple[int, Deployment]) -> None:
    version, deployment = versioned
    async with await aconnect(deployment.owner) as conn:
        await text_targets(conn, ("notes",), rows=10, title="title ", body="body ", dimensions=DIMS)
        await conn.execute(
            "CREATE TABLE gen (id int PRIMARY KEY, title text, "
            "shout text GENERATED ALWAYS AS (upper(title)) STORED)"
        )
        await conn.execute("INSERT INTO gen (id, title) VALUES (1, 'one'), (2, 'two')")
        spec = targets.TargetSpec(
            name="gen", table="gen", columns=("shout",), model="local-hash", dimensions=DIMS
        )
        await targets.add_target(conn, fast_settings(), spec)
        if version >= 18:
            await conn.execute(
                "CREATE TABLE virt (id int PRIMARY KEY, title text, "
                "shout text GENERATED ALWAYS AS (upper(title)) VIRTUAL)"
            )
            spec = targets.TargetSpec(
                name="virt", table="virt", columns=("title", "shout"), model="local-hash",
                dimensions=DIMS,
            )  # fmt: skip
            with pytest.raises(ValidationError, match=r"shout of public\.virt is a VIRTUAL"):
                await targets.add_target(conn, fast_settings(), spec)
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            with psycopg.connect(deployment.writer, autocommit=True) as writer:
                writer.execute("UPDATE gen SET title = 'changed' WHERE id = 1")
                writer.execute("INSERT INTO gen (id, title) VALUES (3, 'three')")
                await wait_for(lambda: _shouts(conn), timeout=60)
                await _neighbour_healthy(conn, writer, "healthy beside generated")


async def _shouts(conn: AsyncConn) -> bool:
    cur = await conn.execute("SELECT id, embedding FROM syncsvc.gen_embeddings ORDER BY id")
    rows = await cur.fetchall()
    want = {1: "CHANGED", 2: "TWO", 3: "THREE"}
    return [r["id"] for r in rows] == [1, 2, 3] and all(
        np.allclose(r["embedding"].to_numpy(), expected(want[r["id"]], DIMS), atol=1e-6)
        for r in rows
    )


async def test_a_busy_partition_never_fails_the_application(
    versioned: tuple[int, Deployment],
) -> None:
    """The application holds a new partition in an open transaction: syncsvc's CREATE TRIGGER
    gives up its lock wait (the writer's statements all succeed), says so, and captures the
    partition once the transaction ends."""
    _, deployment = versioned
    async with await aconnect(deployment.owner) as conn:
        await _setup(conn)
        await conn.execute(
            "CREATE TABLE events_p2 PARTITION OF events FOR VALUES FROM (200) TO (300)"
        )
        with psycopg.connect(deployment.writer) as busy:
            busy.execute("INSERT INTO events_p2 VALUES (201, 'title 201', 'in a long transaction')")
            async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
                await wait_for(lambda: _drift_says(conn, "cannot change the capture"), timeout=60)
                note = await _drift(conn, "events")
                assert note is not None and "public.events_p2" in note and "retrying" in note
                busy.execute("INSERT INTO events_p2 VALUES (202, 'title 202', 'still fine')")
                busy.execute("UPDATE events SET body = 'through the parent' WHERE id = 1")
                busy.commit()
                await wait_for(lambda: _settled(conn), timeout=60)
                await wait_for(lambda: _no_drift(conn), timeout=30)
                with psycopg.connect(deployment.writer, autocommit=True) as writer:
                    writer.execute("UPDATE events_p2 SET body = 'captured now' WHERE id = 202")
                    await wait_for(lambda: _settled(conn), timeout=60)
                    await _neighbour_healthy(conn, writer, "healthy beside a busy partition")


async def _drift_says(conn: AsyncConn, words: str) -> bool:
    return words in (await _drift(conn, "events") or "")


async def test_a_foreign_partition_is_refused(versioned: tuple[int, Deployment]) -> None:
    _, deployment = versioned
    with psycopg.connect(deployment.admin, autocommit=True) as dba:
        # A wrapper without a handler: enough to declare foreign tables, never to read them.
        dba.execute("CREATE FOREIGN DATA WRAPPER nowhere")
        dba.execute("CREATE SERVER far FOREIGN DATA WRAPPER nowhere")
        dba.execute("GRANT USAGE ON FOREIGN SERVER far TO syncsvc_owner")
    async with await aconnect(deployment.owner) as conn:
        await text_targets(conn, ("notes",), rows=10, title="title ", body="body ", dimensions=DIMS)
        # PostgreSQL allows foreign partitions only under a table without unique indexes
        # (so never under a registered one): the reason given is the foreign partition.
        await conn.execute(
            "CREATE TABLE logs (id int NOT NULL, title text) PARTITION BY RANGE (id)"
        )
        await conn.execute("CREATE TABLE logs_p0 PARTITION OF logs FOR VALUES FROM (0) TO (100)")
        await conn.execute(
            "CREATE FOREIGN TABLE logs_far PARTITION OF logs FOR VALUES FROM (100) TO (200) "
            "SERVER far"
        )
        await conn.execute("CREATE FOREIGN TABLE lone (id int, title text) SERVER far")
        for table, words in (
            ("logs", r"partition public\.logs_far of public\.logs is a foreign table"),
            ("lone", "statement triggers cannot capture"),
        ):
            spec = targets.TargetSpec(
                name="logs", table=table, columns=("title",), model="local-hash", dimensions=DIMS
            )
            with pytest.raises(ValidationError, match=words):
                await targets.add_target(conn, fast_settings(), spec)
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 1


async def test_repair_and_remove_cover_every_partition(versioned: tuple[int, Deployment]) -> None:
    """``target repair`` rebuilds the capture on every partition; ``target remove`` takes it off
    every one, a detached one not yet reconciled included, and the application writes on."""
    _, deployment = versioned
    captured = "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'syncsvc%%'"
    async with await aconnect(deployment.owner) as conn:
        await _setup(conn)
        # events and its 4 partitions, notes: 4 triggers each.
        assert await scalar(conn, captured) == 6 * 4
        await drift.repair(conn, "events")
        assert await scalar(conn, captured) == 6 * 4
        async with running_daemon(deployment.owner, NO_PERIODIC_SWEEP):
            await wait_for(lambda: _settled(conn), timeout=60)
            with psycopg.connect(deployment.writer, autocommit=True) as writer:
                writer.execute("UPDATE events_p1a SET body = 'after repair' WHERE id = 101")
                writer.execute("INSERT INTO events_p1b VALUES (151, 'title 151', 'after repair')")
                await wait_for(lambda: _settled(conn), timeout=60)
        await conn.execute("ALTER TABLE events DETACH PARTITION events_p0")
        await targets.remove_target(conn, "events")
        assert await scalar(conn, captured) == 4  # notes' own
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            writer.execute("INSERT INTO events_p0 VALUES (99, 'title 99', 'untracked')")
            writer.execute("INSERT INTO events_p1a VALUES (149, 'title 149', 'untracked')")
            writer.execute("UPDATE events SET body = 'untracked' WHERE id = 101")
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0
