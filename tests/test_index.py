"""HNSW indexes per generation: metric, >2,000-dimension strategies, planner use, daemon builds."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import pytest
from pgvector import Vector

from syncsvc.capture import targets
from syncsvc.core.models import Metric
from syncsvc.core.settings import SearchSettings
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.ops import migrate
from syncsvc.store import indexes
from tests.helpers import fast_settings, queue_empty, running_daemon, scalar, wait_for

ROWS = 200


async def random_target(
    conn: AsyncConn, dims: int, metric: Metric = Metric.COSINE, rows: int = ROWS
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A target whose generation table is filled with seeded random vectors (no API involved)."""
    await conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text, grp int)")
    await conn.execute(
        "INSERT INTO items SELECT i, 'item ' || i, i %% 4 FROM generate_series(1, %s) i", (rows,)
    )
    spec = targets.TargetSpec(
        name="items",
        table="items",
        columns=("name",),
        model="local-hash",
        dimensions=dims,
        metric=metric,
    )
    target = await targets.add_target(conn, fast_settings(), spec)
    generation = target.active
    assert generation is not None
    # Clusters of 10 like real embeddings: a query's true neighbours stand out from the rest,
    # which is what quantized candidates plus exact re-ranking rely on.
    rng = np.random.default_rng(dims)
    centers = rng.standard_normal((rows // 10 + 1, dims))
    data = (centers[np.arange(rows) // 10] + 0.5 * rng.standard_normal((rows, dims))).astype(
        np.float32
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            f'INSERT INTO syncsvc."{generation.table_name}" (id, embedding, content_hash) '
            "VALUES (%s, %s, '\\x00')",
            [(i + 1, Vector(v)) for i, v in enumerate(data)],
        )
    await conn.execute(f'ANALYZE syncsvc."{generation.table_name}"')
    return data


async def plan_uses_index(conn: AsyncConn, query: np.ndarray[Any, Any], name: str) -> bool:
    text = await scalar(conn, "SELECT syncsvc.search_query('items', 5)")
    await conn.execute(f"PREPARE search_plan(vector) AS {text}")
    try:
        await conn.execute("SET enable_seqscan = off")  # a tiny table would be scanned anyway
        literal = "[" + ",".join(repr(float(x)) for x in query) + "]"
        # EXPLAIN EXECUTE takes no bind parameters: inline the vector as a literal.
        cur = await conn.execute(f"EXPLAIN (FORMAT JSON) EXECUTE search_plan('{literal}')")
        row = await cur.fetchone()
    finally:
        await conn.execute("RESET enable_seqscan")
        await conn.execute("DEALLOCATE search_plan")
    assert row is not None
    return f'"Index Name": "{name}"' in json.dumps(row["QUERY PLAN"])


async def search_ids(conn: AsyncConn, query: np.ndarray[Any, Any], k: int = 5) -> list[int]:
    cur = await conn.execute(
        "SELECT (pk->>'id')::int AS id FROM syncsvc.search_by_vector('items', %s, %s)",
        (Vector(query), k),
    )
    return [r["id"] for r in await cur.fetchall()]


def exact_ids(
    data: np.ndarray[Any, Any], query: np.ndarray[Any, Any], metric: Metric, k: int = 5
) -> list[int]:
    if metric is Metric.COSINE:
        norms = np.linalg.norm(data, axis=1) * np.linalg.norm(query)
        distance = 1 - data @ query / norms
    elif metric is Metric.INNER_PRODUCT:
        distance = -(data @ query)
    else:
        distance = np.linalg.norm(data - query, axis=1)
    return [int(i) + 1 for i in np.argsort(distance, kind="stable")[:k]]


@pytest.mark.parametrize(
    ("dims", "metric", "kind", "opclass"),
    [
        (256, Metric.COSINE, "vector", "vector_cosine_ops"),
        (256, Metric.INNER_PRODUCT, "vector", "vector_ip_ops"),
        (2048, Metric.COSINE, "halfvec", "halfvec_cosine_ops"),
        (2560, Metric.L2, "halfvec", "halfvec_l2_ops"),
        (4096, Metric.COSINE, "binary", "bit_hamming_ops"),
    ],
)
async def test_index_is_used_and_matches_exact_search(
    conn: AsyncConn, dims: int, metric: Metric, kind: str, opclass: str
) -> None:
    data = await random_target(conn, dims, metric)
    target = await get_target(conn, "items")
    generation = target.active
    assert generation is not None
    plan = await indexes.strategy(conn, dims, metric)
    assert (plan.kind, plan.opclass) == (kind, opclass)
    info = await indexes.build_index(conn, target, generation, SearchSettings(hnsw_m=8))
    assert info.valid and opclass in info.definition and "hnsw" in info.definition
    rng = np.random.default_rng(7)
    for _ in range(3):
        query = (data[rng.integers(ROWS)] + 0.1 * rng.standard_normal(dims)).astype(np.float32)
        assert await plan_uses_index(conn, query, info.name)
        assert await search_ids(conn, query) == exact_ids(data, query, metric)


async def test_rebuild_swaps_in_new_parameters(conn: AsyncConn) -> None:
    await random_target(conn, 64, rows=50)
    target = await get_target(conn, "items")
    generation = target.active
    assert generation is not None
    first = await indexes.build_index(conn, target, generation, SearchSettings(hnsw_m=8))
    assert "m='8'" in first.definition
    same = await indexes.build_index(conn, target, generation, SearchSettings(hnsw_m=24))
    assert same == first  # a valid index is kept unless a rebuild is asked for
    rebuilt = await indexes.build_index(
        conn, target, generation, SearchSettings(hnsw_m=24), rebuild=True
    )
    assert rebuilt.name == first.name and "m='24'" in rebuilt.definition
    assert (
        await scalar(
            conn, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE %s", (f"{first.name}%",)
        )
        == 1
    )
    async with conn.transaction():
        with pytest.raises(Exception, match="autocommit"):
            await indexes.build_index(conn, target, generation, rebuild=True)


async def test_filtered_search_returns_k_rows(conn: AsyncConn) -> None:
    data = await random_target(conn, 64, rows=ROWS)
    target = await get_target(conn, "items")
    assert target.active is not None
    await indexes.build_index(conn, target, target.active)
    cur = await conn.execute(
        "SELECT (pk->>'id')::int AS id FROM syncsvc.search_by_vector('items', %s, 20, 'grp = 1')",
        (Vector(data[0]),),
    )
    ids = [r["id"] for r in await cur.fetchall()]
    # Iterative index scans keep going until 20 rows pass the filter.
    assert len(ids) == 20 and all(i % 4 == 1 for i in ids)


async def test_daemon_builds_index_once_backfilled(conn: AsyncConn, db_url: str) -> None:
    await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    await conn.execute(
        "INSERT INTO notes SELECT i, 'note number ' || i FROM generate_series(1, 40) i"
    )
    spec = targets.TargetSpec(
        name="notes", table="notes", columns=("body",), model="local-hash", dimensions=64
    )
    target = await targets.add_target(conn, fast_settings(), spec)
    assert target.active is not None
    settings = fast_settings().model_copy(
        update={"search": SearchSettings(index_check_interval_seconds=0.2)}
    )

    async def indexed() -> bool:
        info = await indexes.index_info(conn, target.active)  # type: ignore[arg-type]
        return info is not None and info.valid

    async with running_daemon(db_url, settings):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(indexed)
    done = await indexes.progress(conn, target, target.active)
    assert done.fraction() == 1.0 and done.source_rows == 40


async def test_index_cli_build_and_list(conn: AsyncConn, db_url: str) -> None:
    from typer.testing import CliRunner

    from syncsvc.cli import app

    await random_target(conn, 64, rows=30)

    def cli(*args: str) -> str:
        result = CliRunner().invoke(app, ["--database-url", db_url, "index", *args])
        assert result.exit_code == 0, result.output
        return result.stdout  # stderr says which database is used

    built = await asyncio.to_thread(cli, "build", "items", "--m", "12")
    assert "items_g" in built and "m='12'" in built
    listed = json.loads(await asyncio.to_thread(cli, "list", "--json"))
    assert listed[0]["valid"] is True and listed[0]["backfilled"] == 1.0


async def test_search_migration_downgrades_and_upgrades(db_url: str) -> None:
    await asyncio.to_thread(migrate.downgrade, db_url, "search@-1")
    check = "SELECT to_regproc('syncsvc.search_by_vector') IS NULL AND "
    check += "to_regclass('syncsvc.query_cache') IS NULL"
    connection = await aconnect(db_url)
    try:
        assert await scalar(connection, check)
        await asyncio.to_thread(migrate.upgrade, db_url)
        assert not await scalar(connection, check)
    finally:
        await connection.close()
