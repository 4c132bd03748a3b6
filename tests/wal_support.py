"""Support for tests/test_wal_capture.py: the tables, the application's edits, and the checks
that a target is exact (every row's vector is the simulator's vector of its current text)."""

from __future__ import annotations

import random
import re
import time
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import psycopg
import pytest

from syncsvc import Client
from syncsvc.capture import targets
from syncsvc.core.models import Capture
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.simulator import SimulatorThread
from syncsvc.simulator.vectors import embedding
from syncsvc.web import admin
from tests.conftest import Cluster, Deployment
from tests.helpers import expected, fast_settings, scalar, wait_for
from tests.simulator_fixtures import simulator_settings

DIMS = 64


def drop_with_slots(cluster: Cluster, made: Deployment) -> None:
    """The database and its slot (slots are the server's, not the database's)."""
    name = urlsplit(made.admin).path.lstrip("/")
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE database = %s AND NOT active",
            (name,),
        )
    cluster.drop(made)


def sim_settings(sim: SimulatorThread) -> Settings:
    return fast_settings().model_copy(
        update={"providers": simulator_settings(sim, concurrency=4).providers}
    )


async def make_tables(conn: AsyncConn) -> None:
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


def target_spec(name: str, columns: tuple[str, ...], capture: Capture, **kw: Any) -> Any:
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


async def add_all(conn: AsyncConn, settings: Settings, **kw: Any) -> None:
    docs = target_spec("docs", ("title", "body"), Capture.WAL, **kw)
    await targets.add_target(conn, settings, docs)
    await targets.add_target(conn, settings, target_spec("events", ("body",), Capture.WAL, **kw))
    await targets.add_target(
        conn, settings, target_spec("notes", ("title", "body"), Capture.TRIGGERS, **kw)
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


async def assert_exact(
    conn: AsyncConn, table: str, template: str, source: str | None = None
) -> int:
    """Every row with text has exactly the vector of its current text, no other vector
    (``table``: the target's name; ``source``: its table when named otherwise)."""
    cur = await conn.execute(f"SELECT id, {template} AS input FROM {source or table} ORDER BY id")
    rows = {r["id"]: r["input"] for r in await cur.fetchall()}
    cur = await conn.execute(f"SELECT id, embedding FROM syncsvc.{table}_embeddings ORDER BY id")
    vectors = {r["id"]: r["embedding"] for r in await cur.fetchall()}
    assert sorted(vectors) == sorted(rows), (table, set(vectors) ^ set(rows))
    # local-hash computes the lexical vector; the simulator sends its realistic (dense) one.
    lexical = await scalar(
        conn,
        "SELECT g.provider = 'local-hash' FROM syncsvc.generations g "
        "JOIN syncsvc.targets t ON t.id = g.target_id WHERE t.name = %s AND g.state = 'active'",
        (table,),
    )
    for key, text in rows.items():
        got = np.asarray(vectors[key].to_list(), dtype=np.float32)
        want = expected(text, DIMS) if lexical else np.asarray(embedding(text, DIMS), np.float32)
        assert np.allclose(got, want, atol=1e-6), (table, key, text)
    return len(rows)


DOCS = "concat(title, E'\\n\\n', body)"


async def assert_all_exact(conn: AsyncConn) -> None:
    await assert_exact(conn, "docs", DOCS)
    await assert_exact(conn, "events", "body")
    await assert_exact(conn, "notes", DOCS)


def mixed_edits(url: str, edits: int, seed: int) -> None:
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


def wait_sync(url: str, query: str) -> None:
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(query).fetchone()
            if row is not None and row[0]:
                return
            time.sleep(0.05)
    pytest.fail(f"never true: {query}")


async def slot_and_publication(conn: AsyncConn) -> tuple[bool, bool]:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE database = current_database())"
        " AS slot, EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'syncsvc') AS pub"
    )
    row = await cur.fetchone()
    assert row is not None
    return row["slot"], row["pub"]


def client_adds(url: str) -> str:
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


async def admin_rows(conn: AsyncConn) -> dict[str, str]:
    """Each target's row of the admin page's targets table (the page's own view model and
    template), as HTML."""
    page = admin.render(await admin.gather(conn, []), refresh=False)
    rows = re.finditer(r'<tr data-target="([^"]+)".*?</tr>', page, re.DOTALL)
    return {row.group(1): row.group(0) for row in rows}
