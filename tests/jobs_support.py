"""Helpers shared by the jobs, promote and schedule tests."""

from __future__ import annotations

from typing import Any

import numpy as np

from syncsvc.capture import targets
from syncsvc.core.models import Generation
from syncsvc.core.settings import JobSettings, Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from tests.helpers import expected, fast_settings, scalar

DIMS = 256


def job_settings(worker: dict[str, Any] | None = None, **jobs: Any) -> Settings:
    """Fast worker settings plus quick job polling."""
    settings = fast_settings(**(worker or {}))
    conf: dict[str, Any] = {"poll_seconds": 0.05, "progress_seconds": 0.1, "chunk_rows": 500}
    conf.update(jobs)
    return settings.model_copy(update={"jobs": JobSettings(**conf)})


async def make_docs(conn: AsyncConn, rows: int) -> None:
    await conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text)")
    await conn.execute(
        "INSERT INTO docs SELECT i, 'title ' || i, 'body words number ' || i "
        "FROM generate_series(1, %s) i",
        (rows,),
    )
    spec = targets.TargetSpec(
        name="docs", table="docs", columns=("title", "body"), model="local-hash", dimensions=DIMS
    )
    await targets.add_target(conn, fast_settings(), spec)


async def generation(conn: AsyncConn, gen_id: int) -> Generation:
    target = await get_target(conn, "docs")
    return next(g for g in target.generations if g.id == gen_id)


async def vector_count(conn: AsyncConn, table: str) -> int:
    return int(await scalar(conn, f"SELECT count(*) FROM syncsvc.{table}"))


async def assert_generation_matches_source(conn: AsyncConn, table: str, dims: int) -> None:
    """Every live row has exactly one vector in ``table``, equal to the embedding of its text."""
    cur = await conn.execute(
        f"SELECT d.id, concat(d.title, E'\\n\\n', d.body) AS text, v.embedding, v.chunk "
        f"FROM docs d FULL JOIN syncsvc.{table} v ON v.id = d.id ORDER BY d.id"
    )
    rows = await cur.fetchall()
    assert rows, "no rows"
    for row in rows:
        assert row["text"] is not None, f"orphan vector {row}"
        assert row["embedding"] is not None, f"row {row['id']} has no vector"
        assert row["chunk"] == 0
        np.testing.assert_allclose(
            row["embedding"].to_numpy(), expected(row["text"], dims), rtol=1e-6, atol=1e-7
        )
