"""Search from SQL alone, from the Python API and from the CLI, against a real pgvector."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import typer
from pgvector import Vector
from psycopg import errors
from psycopg.conninfo import make_conninfo
from typer.testing import CliRunner

from syncsvc import AsyncClient, Client
from syncsvc.capture import targets
from syncsvc.core.models import Generation, content_hash
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.ops import migrate
from syncsvc.providers.local import LocalHashProvider
from syncsvc.search.engine import SearchError
from tests.helpers import expected, fast_settings, queue_empty, running_daemon, scalar, wait_for

DIMS = 256

DOCS: list[tuple[int, str, str, str, int]] = [
    (1, "Sourdough bread", "Feed the starter, knead the dough, bake the loaf hot.", "food", 5),
    (2, "Tomato soup", "Roast tomatoes and garlic, blend the soup, season well.", "food", 3),
    (
        3,
        "Bread machine tips",
        "A bread machine kneads dough and bakes a loaf overnight.",
        "food",
        40,
    ),
    (4, "Marathon training", "Long runs, tempo runs and rest days build endurance.", "sport", 10),
    (5, "Cycling cadence", "Spin the pedals at ninety rpm to save your legs.", "sport", 8),
    (6, "Python asyncio", "Event loops, tasks and coroutines run concurrent IO.", "tech", 12),
    (7, "PostgreSQL indexes", "B-tree, GIN and HNSW indexes speed up queries.", "tech", 20),
    (8, "Vector search", "HNSW indexes find nearest neighbour vectors quickly.", "tech", 25),
    (9, "Gardening roses", "Prune roses in spring and feed them compost.", "home", 4),
    (10, "Baking bread at home", "Knead dough, proof it, bake the loaf until golden.", "food", 7),
]


async def make_docs(conn: AsyncConn, docs: list[tuple[int, str, str, str, int]] = DOCS) -> None:
    await conn.execute(
        "CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text, topic text, price int)"
    )
    async with conn.cursor() as cur:
        await cur.executemany("INSERT INTO docs VALUES (%s, %s, %s, %s, %s)", docs)


async def add_docs_target(conn: AsyncConn, dims: int = DIMS, **kw: Any) -> None:
    spec = targets.TargetSpec(
        name=str(kw.pop("name", "docs")),
        table="docs",
        columns=("title", "body"),
        model="local-hash",
        dimensions=dims,
        **kw,
    )
    await targets.add_target(conn, fast_settings(), spec)


async def embedded(conn: AsyncConn, n: int, view: str = "docs_embeddings") -> bool:
    return bool(await scalar(conn, f"SELECT count(*) = {n} FROM syncsvc.{view}"))


async def synced_docs(conn: AsyncConn, url: str) -> None:
    """Docs table, target and every row embedded by the real daemon."""
    await make_docs(conn)
    await add_docs_target(conn)
    async with running_daemon(url):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: embedded(conn, len(DOCS)))


def vec(text: str, dims: int = DIMS) -> str:
    return "[" + ",".join(repr(float(x)) for x in expected(text, dims)) + "]"


async def test_psql_nearest_to_vector_joined_and_filtered(conn: AsyncConn, db_url: str) -> None:
    await synced_docs(conn, db_url)
    # Everything below is plain SQL a psql user can type.
    cur = await conn.execute(
        """SELECT d.id, d.title, r.distance
           FROM syncsvc.search_by_vector('docs', %s::vector, 10) r
           JOIN docs d ON d.id = (r.pk ->> 'id')::bigint
           ORDER BY r.distance""",
        (vec("knead dough bake loaf"),),
    )
    rows = await cur.fetchall()
    assert len(rows) == 10
    assert {r["id"] for r in rows[:3]} == {1, 3, 10}
    assert [r["distance"] for r in rows] == sorted(r["distance"] for r in rows)
    # Filter on a source column inside the search (so k rows still come back) ...
    cur = await conn.execute(
        """SELECT d.id FROM syncsvc.search_by_vector('docs', %s::vector, 3, 'price < 10') r
           JOIN docs d ON d.id = (r.pk ->> 'id')::bigint ORDER BY r.distance""",
        (vec("knead dough bake loaf"),),
    )
    assert [r["id"] for r in await cur.fetchall()][:2] in ([1, 10], [10, 1])
    # ... or with typed keys through jsonb_populate_record and an outer WHERE.
    cur = await conn.execute(
        """SELECT d.id, r.distance
           FROM syncsvc.search_by_vector('docs', %s::vector, 10) r
           CROSS JOIN LATERAL jsonb_populate_record(NULL::docs, r.pk) k
           JOIN docs d ON d.id = k.id
           WHERE d.topic = 'tech' ORDER BY r.distance""",
        (vec("hnsw vector indexes"),),
    )
    assert [r["id"] for r in await cur.fetchall()] == [8, 7, 6]


async def test_psql_similar_rows(conn: AsyncConn, db_url: str) -> None:
    await synced_docs(conn, db_url)
    for key in ("1", "[1]", '{"id": 1}', '"1"'):
        cur = await conn.execute(
            """SELECT d.id, r.distance FROM syncsvc.similar_rows('docs', %s::jsonb, 3) r
               JOIN docs d ON d.id = (r.pk ->> 'id')::bigint ORDER BY r.distance""",
            (key,),
        )
        rows = await cur.fetchall()
        assert 1 not in [r["id"] for r in rows]  # the row itself is excluded
        assert {r["id"] for r in rows[:2]} == {3, 10}
    cur = await conn.execute(
        "SELECT (pk->>'id')::int AS id "
        "FROM syncsvc.similar_rows('docs', '1', 5, 'topic <> ''food''')"
    )
    assert all(r["id"] not in (2, 3, 10) for r in await cur.fetchall())
    with pytest.raises(errors.NoDataFound):
        await conn.execute("SELECT * FROM syncsvc.similar_rows('docs', '999', 5)")


async def test_sql_refuses_other_dimensions(conn: AsyncConn, db_url: str) -> None:
    await make_docs(conn)
    await add_docs_target(conn)
    with pytest.raises(errors.DataException, match="128 dimensions"):
        await conn.execute(
            "SELECT * FROM syncsvc.search_by_vector('docs', %s::vector, 5)", (vec("x", 128),)
        )
    with pytest.raises(errors.NoDataFound):
        await conn.execute(
            "SELECT * FROM syncsvc.search_by_vector('nope', %s::vector, 5)", (vec("x"),)
        )


async def test_client_search_caches_query_vectors(conn: AsyncConn, db_url: str) -> None:
    await synced_docs(conn, db_url)
    provider = LocalHashProvider()
    async with AsyncClient(db_url, fast_settings(), provider_factory=lambda _: provider) as client:
        first = await client.search("docs", "how to bake a loaf of bread", k=3)
        assert provider.calls == 1
        assert {h.pk["id"] for h in first} <= {1, 3, 10}
        assert first[0].row["title"] in {
            "Sourdough bread",
            "Bread machine tips",
            "Baking bread at home",
        }
        again = await client.search("docs", "how to bake a loaf of bread", k=3)
        assert provider.calls == 1  # served from syncsvc.query_cache
        assert again == first
        filtered = await client.search(
            "docs", "how to bake a loaf of bread", k=3, where="s.price > %s", params=[6]
        )
        assert [h.pk["id"] for h in filtered][:2] in ([3, 10], [10, 3])
        assert all(h.row["price"] > 6 for h in filtered)
        assert provider.calls == 1
        like = await client.similar("docs", 8, k=2)
        assert like[0].pk == {"id": 7}
    hits = await scalar(conn, "SELECT sum(hits) FROM syncsvc.query_cache")
    assert hits == 2


async def test_cli_and_client_return_the_same_rows(
    conn: AsyncConn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await synced_docs(conn, db_url)
    provider = LocalHashProvider()
    monkeypatch.setattr("syncsvc.cli.search.build_provider", lambda name, settings: provider)
    from syncsvc.cli import app

    runner = CliRunner()

    def cli(*args: str) -> Any:
        result = runner.invoke(app, ["--database-url", db_url, "search", "docs", *args])
        assert result.exit_code == 0, result.output
        return result.stdout  # stderr says which database is used

    out = await asyncio.to_thread(cli, "bread dough", "-k", "4", "--json")
    assert provider.calls == 1
    from_cli = json.loads(out)
    client = await asyncio.to_thread(Client, db_url, fast_settings())
    try:
        from_api = await asyncio.to_thread(client.search, "docs", "bread dough", 4)
        # The CLI cached the query vector: the client's own provider is never called.
        assert client.provider("local-hash").calls == 0  # type: ignore[attr-defined]
    finally:
        await asyncio.to_thread(client.close)
    assert [r["pk"] for r in from_cli] == [h.pk for h in from_api]
    assert [r["distance"] for r in from_cli] == pytest.approx([h.distance for h in from_api])
    assert from_cli[0]["row"]["title"] == from_api[0].row["title"]
    table = await asyncio.to_thread(cli, "bread dough", "--where", "topic = 'food'")
    assert "Sourdough" in table and "Marathon" not in table
    like = json.loads(await asyncio.to_thread(cli, "--like", "8", "-k", "1", "--json"))
    assert [r["pk"] for r in like] == [{"id": 7}]
    assert provider.calls == 1


async def test_switching_generation_reembeds_the_query(conn: AsyncConn, db_url: str) -> None:
    from syncsvc.core.models import GenerationState
    from syncsvc.store import generations

    await synced_docs(conn, db_url)
    provider = LocalHashProvider()
    async with AsyncClient(db_url, fast_settings(), provider_factory=lambda _: provider) as client:
        old_query = await client.embed_query("docs", "vector indexes")
        before = await client.search("docs", "vector indexes", k=2)
        assert provider.calls == 1 and old_query.dimensions == DIMS

        # A new generation (new dimensions), filled, then promoted: the view switches atomically.
        target = await get_target(conn, "docs")
        async with conn.transaction():
            new = await generations.create_generation(
                conn,
                target,
                provider="local-hash",
                space="local-hash",
                model="local-hash",
                dimensions=128,
                options={},
                state=GenerationState.BUILDING,
            )
        await fill_generation(conn, new)
        async with conn.transaction():
            await conn.execute(
                "UPDATE syncsvc.generations SET state = 'retired' WHERE id = %s",
                (target.active.id,),  # type: ignore[union-attr]
            )
            await conn.execute(
                "UPDATE syncsvc.generations SET state = 'active', promoted_at = now() "
                "WHERE id = %s",
                (new.id,),
            )
            await generations.replace_view(conn, target, new)

        after = await client.search("docs", "vector indexes", k=2)
        assert provider.calls == 2  # re-embedded for the new generation, not served from cache
        assert [h.pk for h in after] == [h.pk for h in before]
        cached = await conn.execute(
            "SELECT generation_id, vector_dims(embedding) AS d FROM syncsvc.query_cache "
            "ORDER BY generation_id"
        )
        assert [(r["generation_id"], r["d"]) for r in await cached.fetchall()] == [
            (target.active.id, DIMS),  # type: ignore[union-attr]
            (new.id, 128),
        ]
        # A query vector of the old generation is refused, never compared across spaces.
        with pytest.raises(SearchError, match="embed the query again"):
            await client.search_vector("docs", old_query, k=2)


async def fill_generation(conn: AsyncConn, generation: Generation) -> None:
    """Write a generation's vectors directly (what a backfill of a new generation does)."""
    cur = await conn.execute("SELECT id, concat(title, E'\\n\\n', body) AS t FROM docs")
    rows = [
        (
            r["id"],
            Vector(expected(r["t"], generation.dimensions)),
            content_hash(generation.key, r["t"]),
        )
        for r in await cur.fetchall()
    ]
    async with conn.cursor() as c:
        await c.executemany(
            f'INSERT INTO syncsvc."{generation.table_name}" (id, embedding, content_hash) '
            "VALUES (%s, %s, %s)",
            rows,
        )


async def test_hybrid_fuses_full_text(conn: AsyncConn, db_url: str) -> None:
    await synced_docs(conn, db_url)
    async with AsyncClient(
        db_url, fast_settings(), provider_factory=lambda _: LocalHashProvider()
    ) as client:
        hits = await client.search("docs", "roses compost", k=3, hybrid=True)
        assert hits[0].pk == {"id": 9}
        assert hits[0].score is not None and hits[0].distance is not None
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert len({json.dumps(h.pk) for h in hits}) == 3
        filtered = await client.search("docs", "bread", k=5, hybrid=True, where="s.topic = 'food'")
        assert filtered and all(h.row["topic"] == "food" for h in filtered)


async def test_search_without_migration_fails_clearly(empty_db_url: str) -> None:
    # The migration is what installs the SQL surface; the CLI runs it on demand.
    await asyncio.to_thread(migrate.upgrade, empty_db_url)
    async with AsyncClient(empty_db_url, fast_settings()) as client:
        with pytest.raises(Exception, match="no target named"):
            await client.search("docs", "anything")


async def test_search_on_a_read_only_connection_reads_the_cache_and_writes_nothing(
    conn: AsyncConn, db_url: str
) -> None:
    """A hot standby refuses writes: search there must still work, from the cache or not."""
    await synced_docs(conn, db_url)
    provider = LocalHashProvider()
    settings = fast_settings()
    async with AsyncClient(db_url, settings, provider_factory=lambda _: provider) as client:
        cached_on_primary = await client.search("docs", "bake a loaf of bread", k=3)
    assert provider.calls == 1
    standby = make_conninfo(db_url, options="-c default_transaction_read_only=on")
    async with AsyncClient(standby, settings, provider_factory=lambda _: provider) as client:
        assert await client.search("docs", "bake a loaf of bread", k=3) == cached_on_primary
        assert provider.calls == 1  # read from the cache without counting the hit
        for expected_calls in (2, 3):  # not cached: embedded each time, never stored
            hits = await client.search("docs", "marathon long runs", k=1)
            assert hits[0].pk == {"id": 4}
            assert provider.calls == expected_calls
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.query_cache") == 1
    assert await scalar(conn, "SELECT sum(hits) FROM syncsvc.query_cache") == 0


def test_query_cache_ages_are_parsed_with_units() -> None:
    from syncsvc.cli.search import parse_age

    assert [parse_age(t) for t in ("30d", "12h", "1.5h", "90m", "600s", "600")] == [
        2_592_000, 43_200, 5_400, 5_400, 600, 600
    ]  # fmt: skip
    with pytest.raises(typer.BadParameter, match="not an age"):
        parse_age("soon")


async def test_query_cache_cli_prunes_only_entries_unused_for_the_given_age(
    conn: AsyncConn, db_url: str
) -> None:
    await synced_docs(conn, db_url)
    provider = LocalHashProvider()
    async with AsyncClient(db_url, fast_settings(), provider_factory=lambda _: provider) as client:
        await client.search("docs", "bread dough", k=1)
        await client.search("docs", "marathon", k=1)
    await conn.execute(
        "UPDATE syncsvc.query_cache SET last_used_at = now() - interval '40 days' "
        "WHERE query_hash = (SELECT min(query_hash) FROM syncsvc.query_cache)"
    )
    from syncsvc.cli import app

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, ["--database-url", db_url, "query-cache", *args])
        assert result.exit_code == 0, result.output
        return result.stdout  # stderr says which database is used

    assert "removed 0 " in await asyncio.to_thread(cli, "prune", "--older-than", "41d")
    assert "removed 1 " in await asyncio.to_thread(cli, "prune", "--older-than", "30d")
    stats = json.loads(await asyncio.to_thread(cli, "stats", "--json"))
    assert [(s["entries"], s["hits"]) for s in stats] == [(1, 0)]
