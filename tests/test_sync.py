"""End-to-end change capture and embedding against a real PostgreSQL + pgvector."""

from __future__ import annotations

import random

import numpy as np
import pytest

from syncsvc.capture import targets
from syncsvc.core.types import AsyncConn
from syncsvc.db.database import create_pool
from syncsvc.providers.local import LocalHashProvider
from syncsvc.queue.entries import expand_inbox
from tests.helpers import expected, fast_settings, queue_empty, running_daemon, scalar, wait_for

DIMS = 256


async def make_articles(conn: AsyncConn, rows: int = 0) -> None:
    await conn.execute(
        "CREATE TABLE articles (id bigint PRIMARY KEY, title text, body text, price int)"
    )
    if rows:
        await conn.execute(
            "INSERT INTO articles SELECT i, 'title ' || i, 'body text number ' || i, i "
            "FROM generate_series(1, %s) i",
            (rows,),
        )


async def add(conn: AsyncConn, name: str = "articles", **kw: object) -> None:
    spec = targets.TargetSpec(
        name=name,
        table=str(kw.pop("table", "articles")),
        columns=tuple(kw.pop("columns", ("title", "body"))),  # type: ignore[arg-type]
        model="local-hash",
        dimensions=DIMS,
        **kw,  # type: ignore[arg-type]
    )
    await targets.add_target(conn, fast_settings(), spec)


async def vectors(conn: AsyncConn) -> dict[int, np.ndarray]:
    cur = await conn.execute("SELECT id, embedding FROM syncsvc.articles_embeddings")
    return {r["id"]: r["embedding"].to_numpy() for r in await cur.fetchall()}


async def current_texts(conn: AsyncConn) -> dict[int, str]:
    cur = await conn.execute("SELECT id, concat(title, E'\\n\\n', body) AS t FROM articles")
    return {r["id"]: r["t"] for r in await cur.fetchall()}


async def assert_in_sync(conn: AsyncConn) -> None:
    texts = await current_texts(conn)
    stored = await vectors(conn)
    assert set(stored) == set(texts)
    for pk, text in texts.items():
        np.testing.assert_allclose(stored[pk], expected(text, DIMS), rtol=1e-6, atol=1e-7)


async def test_backfill_then_live_edits(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=50)
    await add(conn)
    provider = LocalHashProvider()
    async with running_daemon(db_url, provider=provider):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: _count(conn, 50))
        await assert_in_sync(conn)
        await conn.execute("UPDATE articles SET body = 'edited body' WHERE id = 7")
        await conn.execute("INSERT INTO articles VALUES (51, 'new', 'fresh row', 1)")
        await conn.execute("DELETE FROM articles WHERE id = 3")
        await wait_for(lambda: queue_empty(conn))
        await assert_in_sync(conn)
    assert provider.inputs == 50 + 2  # the backfill, then the edit and the insert
    assert provider.calls >= 5


async def _count(conn: AsyncConn, n: int) -> bool:
    return bool(await scalar(conn, "SELECT count(*) = %s FROM syncsvc.articles_embeddings", (n,)))


async def test_non_embedded_and_identical_updates_cost_nothing(
    conn: AsyncConn, db_url: str
) -> None:
    await make_articles(conn, rows=20)
    await add(conn)
    provider = LocalHashProvider()
    async with running_daemon(db_url, provider=provider):
        await wait_for(lambda: _count(conn, 20))
        await wait_for(lambda: queue_empty(conn))
        calls = provider.calls
        await conn.execute("UPDATE articles SET price = price + 1")
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0
        await conn.execute("UPDATE articles SET title = title, body = body")
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0
        # Writing the same text back after a real edit queues the row, but costs no API call
        # once the text is back to what is stored.
        await conn.execute("BEGIN")
        await conn.execute("UPDATE articles SET body = 'x' WHERE id = 1")
        await conn.execute("UPDATE articles SET body = 'body text number 1' WHERE id = 1")
        await conn.execute("COMMIT")
        await wait_for(lambda: queue_empty(conn))
        assert provider.calls == calls


async def test_one_pending_entry_per_row(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=3)
    await add(conn)
    for i in range(5):
        await conn.execute("UPDATE articles SET body = %s WHERE id = 2", (f"v{i}",))
    await conn.execute("UPDATE articles SET body = 'bulk'")  # one statement, three rows
    # Each statement leaves one inbox row; the daemon folds them into one entry per row.
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 6
    pool = create_pool(db_url)
    await pool.open()
    try:
        await expand_inbox(pool)
    finally:
        await pool.close()
    cur = await conn.execute("SELECT pk, seq, state FROM syncsvc.queue ORDER BY pk")
    rows = await cur.fetchall()
    assert rows == [
        {"pk": [1], "seq": 1, "state": "pending"},
        {"pk": [2], "seq": 1, "state": "pending"},
        {"pk": [3], "seq": 1, "state": "pending"},
    ]
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0


async def test_truncate_removes_vectors_and_queue(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=10)
    await add(conn)
    async with running_daemon(db_url):
        await wait_for(lambda: _count(conn, 10))
        await conn.execute("UPDATE articles SET body = 'pending edit'")
        await conn.execute("TRUNCATE articles")
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.articles_embeddings") == 0
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue") == 0
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0


async def test_thousand_mixed_operations(conn: AsyncConn, db_url: str) -> None:
    await make_articles(conn, rows=200)
    await add(conn)
    rng = random.Random(42)
    async with running_daemon(db_url):
        next_id = 201
        for _ in range(1000):
            op = rng.random()
            pk = rng.randint(1, next_id - 1)
            if op < 0.4:
                await conn.execute(
                    "UPDATE articles SET body = %s WHERE id = %s", (f"edit {rng.random()}", pk)
                )
            elif op < 0.75:
                await conn.execute(
                    "INSERT INTO articles VALUES (%s, %s, %s, 0)",
                    (next_id, f"t{next_id}", f"inserted words {rng.random()}"),
                )
                next_id += 1
            else:
                await conn.execute("DELETE FROM articles WHERE id = %s", (pk,))
        await wait_for(lambda: queue_empty(conn), timeout=60)
        await assert_in_sync(conn)
        # Exactly one vector per live row, none for deleted ones.
        assert (
            await scalar(
                conn,
                "SELECT count(*) FROM syncsvc.articles_embeddings e "
                "WHERE NOT EXISTS (SELECT 1 FROM articles a WHERE a.id = e.id)",
            )
            == 0
        )


@pytest.mark.parametrize("table", ['"Odd Schema"."My Table"'])
async def test_quoted_identifiers_and_composite_key(
    conn: AsyncConn, db_url: str, table: str
) -> None:
    await conn.execute('CREATE SCHEMA "Odd Schema"')
    await conn.execute(
        'CREATE TABLE "Odd Schema"."My Table" ("Tenant" text, "Doc Id" int, '
        '"Body; DROP TABLE x" text, PRIMARY KEY ("Tenant", "Doc Id"))'
    )
    await conn.execute(
        """INSERT INTO "Odd Schema"."My Table" VALUES ('a', 1, 'hello world'), ('b', 1, 'bye')"""
    )
    spec = targets.TargetSpec(
        name="odd",
        table=table,
        columns=("Body; DROP TABLE x",),
        model="local-hash",
        dimensions=DIMS,
    )
    await targets.add_target(conn, fast_settings(), spec)
    async with running_daemon(db_url):
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 2 FROM syncsvc.odd_embeddings"))
        await conn.execute("""UPDATE "Odd Schema"."My Table" SET "Body; DROP TABLE x" = 'changed'
                              WHERE "Tenant" = 'a'""")
        await wait_for(lambda: queue_empty(conn))
    cur = await conn.execute(
        'SELECT "Tenant", "Doc Id", embedding FROM syncsvc.odd_embeddings ORDER BY 1'
    )
    rows = await cur.fetchall()
    assert [(r["Tenant"], r["Doc Id"]) for r in rows] == [("a", 1), ("b", 1)]
    np.testing.assert_allclose(
        rows[0]["embedding"].to_numpy(), expected("changed", DIMS), atol=1e-7
    )
