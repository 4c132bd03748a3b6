"""DashScope sparse vectors: stored per row by the daemon, fused with dense ones in hybrid search.

Everything runs against the real HTTP simulator on the native wire and a real pgvector.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from pgvector import SparseVector
from typer.testing import CliRunner

from syncsvc import jobs
from syncsvc.capture import targets
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import generation_key
from syncsvc.core.settings import JobSettings, Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.ops import migrate
from syncsvc.providers.registry import build_provider, publish_models
from syncsvc.search import engine as search
from syncsvc.search import ranking
from syncsvc.search.engine import RRF_K
from syncsvc.simulator import SimulatorThread
from syncsvc.simulator.vectors import sparse_entries
from tests.helpers import fast_settings, queue_empty, running_daemon, scalar, wait_for
from tests.simulator_fixtures import SIM_KEY_ENV, simulator_settings
from tests.test_search import DOCS, make_docs
from tests.test_sync import current_texts, make_articles

DIMS = 64
NATIVE = "dashscope-intl-native"


def native_settings(sim: SimulatorThread, profile: str = NATIVE) -> Settings:
    providers = simulator_settings(sim, profile).providers
    return Settings(worker=fast_settings().worker, providers=providers)


def simulated(text: str) -> dict[int, float]:
    """What the simulator returns as the sparse vector of ``text``."""
    return {e["index"]: e["value"] for e in sparse_entries(text)}


def as_dict(vector: SparseVector) -> dict[int, float]:
    return dict(zip(vector.indices(), vector.values(), strict=True))


def assert_sparse_equal(stored: dict[int, float], wanted: dict[int, float]) -> None:
    assert set(stored) == set(wanted)
    for index, value in wanted.items():
        assert stored[index] == pytest.approx(value, rel=1e-6)  # float32 in sparsevec


async def sparse_target(
    conn: AsyncConn, settings: Settings, name: str, table: str, columns: tuple[str, ...]
) -> None:
    spec = targets.TargetSpec(
        name=name,
        table=table,
        columns=columns,
        model="text-embedding-v4",
        dimensions=DIMS,
        provider="sim",
        options={"sparse": True},
    )
    await targets.add_target(conn, settings, spec)


async def embed_all(conn: AsyncConn, url: str, settings: Settings) -> None:
    provider = build_provider("sim", settings)
    async with running_daemon(url, settings, provider):
        await wait_for(lambda: queue_empty(conn), timeout=30)


async def test_daemon_stores_the_providers_sparse_vector_of_every_row(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    settings = native_settings(simulator)
    await make_articles(conn, rows=12)
    await conn.execute("UPDATE articles SET body = body || ' apple apple pie' WHERE id = 3")
    await sparse_target(conn, settings, "articles", "articles", ("title", "body"))
    await embed_all(conn, db_url, settings)
    # An edit re-embeds both vectors.
    await conn.execute("UPDATE articles SET body = 'pear tart and pear jam' WHERE id = 5")
    await embed_all(conn, db_url, settings)
    texts = await current_texts(conn)
    cur = await conn.execute("SELECT id, sparse FROM syncsvc.articles_embeddings")
    stored = {r["id"]: r["sparse"] for r in await cur.fetchall()}
    assert set(stored) == set(texts)
    for pk, text in texts.items():
        assert stored[pk] is not None, pk
        assert_sparse_equal(as_dict(stored[pk]), simulated(text))
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.failures") == 0


async def test_hybrid_search_on_a_sparse_generation_fuses_dense_and_sparse_rankings(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = native_settings(simulator)
    await make_docs(conn)
    await sparse_target(conn, settings, "docs", "docs", ("title", "body"))
    await embed_all(conn, db_url, settings)
    target = await get_target(conn, "docs")
    generation = search.active_generation(target)
    assert generation.sparse

    def no_full_text(*args: Any) -> Any:
        raise AssertionError("a sparse generation must not fall back to full-text search")

    monkeypatch.setattr(ranking, "hybrid_statement", no_full_text)
    text = "knead the bread dough"
    provider = build_provider("sim", settings)
    try:
        query = await search.embed_query(conn, provider, target, text)
        again = await search.embed_query(conn, provider, target, text)
    finally:
        await provider.aclose()
    assert not query.cached and query.sparse is not None
    assert_sparse_equal(query.sparse, simulated(text))
    # The second time both vectors come from the cache: no API call.
    assert again.cached and again.sparse is not None
    assert_sparse_equal(again.sparse, query.sparse)
    assert simulator.stats()["inputs"] == len(DOCS) + 1

    hits = await search.search_vector(conn, target, query, k=5, hybrid_text=text)

    # The same fusion computed here: dense ranks from the plain search, sparse ranks from the
    # simulator's sparse vectors of the query and of every document.
    dense = await search.search_vector(conn, target, query, k=len(DOCS))
    dense_rank = {h.pk["id"]: i for i, h in enumerate(dense, start=1)}
    q = simulated(text)
    products = {
        doc_id: sum(v * q.get(i, 0.0) for i, v in simulated(f"{title}\n\n{body}").items())
        for doc_id, title, body, _, _ in DOCS
    }
    ranked = sorted((pk for pk, p in products.items() if p > 0), key=lambda pk: -products[pk])
    sparse_rank = {pk: i for i, pk in enumerate(ranked, start=1)}
    fused = {
        pk: 1 / (RRF_K + rank) + (1 / (RRF_K + sparse_rank[pk]) if pk in sparse_rank else 0)
        for pk, rank in dense_rank.items()
    }
    best = max(fused, key=lambda pk: fused[pk])
    assert hits[0].pk == {"id": best}
    assert best in (1, 3, 10)  # a bread recipe
    for hit in hits:
        assert hit.score == pytest.approx(fused[hit.pk["id"]], rel=1e-9)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)

    # A filter applies to both rankings.
    filtered = await search.search_vector(
        conn, target, query, k=5, where="s.topic = %s", params=["sport"], hybrid_text=text
    )
    assert filtered and all(h.row["topic"] == "sport" for h in filtered)


async def test_sparse_is_refused_unless_the_profile_returns_sparse_vectors(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    await make_articles(conn, rows=1)
    settings = native_settings(simulator, profile="dashscope-intl")  # compatible mode
    with pytest.raises(ValidationError, match="cannot return sparse vectors"):
        await sparse_target(conn, settings, "articles", "articles", ("title", "body"))
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 0

    from syncsvc.cli import app

    args = ["--database-url", db_url, "target", "add", "articles", "--table", "articles"]
    args += ["--columns", "title,body", "--sparse", "--provider", "local-hash"]
    result = await asyncio.to_thread(CliRunner().invoke, app, args)
    assert result.exit_code != 0
    assert "cannot return sparse vectors" in result.output
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 0


async def test_sparse_migration_downgrades_and_upgrades(db_url: str) -> None:
    check = (
        "SELECT to_regclass('syncsvc.sparse_query_cache') IS NULL AND "
        "position('sparse' IN prosrc) = 0 FROM pg_proc WHERE proname = 'create_vector_table'"
    )
    await asyncio.to_thread(migrate.downgrade, db_url, "sparse@0001")
    connection = await aconnect(db_url)
    try:
        assert await scalar(connection, check)
        await asyncio.to_thread(migrate.upgrade, db_url)
        assert not await scalar(connection, check)
    finally:
        await connection.close()


async def test_a_reembed_keeps_the_sparse_vectors_unless_told_not_to(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    settings = native_settings(simulator).model_copy(
        update={"jobs": JobSettings(poll_seconds=0.05, progress_seconds=0.1)}
    )
    await make_articles(conn, rows=12)
    await sparse_target(conn, settings, "articles", "articles", ("title", "body"))
    job = await jobs.request_reembed(
        conn, settings, "articles", model="text-embedding-v4", dimensions=128, auto_promote=True
    )
    provider = build_provider("sim", settings)
    async with running_daemon(db_url, settings, provider):

        async def promoted() -> bool:
            target = await get_target(conn, "articles")
            return target.active is not None and target.active.id == job.generation_id

        await wait_for(promoted, timeout=30)
        await wait_for(lambda: queue_empty(conn), timeout=30)
    active = (await get_target(conn, "articles")).active
    assert active is not None
    assert (active.dimensions, active.options) == (128, {"sparse": True})
    # The daemon gave the generation its real key (the SQL function can only guess it).
    assert active.key == generation_key(active.space, 128, {"sparse": True})
    texts = await current_texts(conn)
    cur = await conn.execute("SELECT id, sparse FROM syncsvc.articles_embeddings")
    stored = {r["id"]: r["sparse"] for r in await cur.fetchall()}
    assert set(stored) == set(texts)
    for pk, text in texts.items():
        assert_sparse_equal(as_dict(stored[pk]), simulated(text))

    # --no-sparse: the next generation is dense only.
    from syncsvc.cli import app

    result = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["--database-url", db_url, "reembed", "articles", "--model", "text-embedding-v4",
         "--dimensions", "256", "--provider", "sim", "--no-sparse"],
        env={"SYNCSVC_PROVIDERS__SIM__PROFILE": NATIVE,
             "SYNCSVC_PROVIDERS__SIM__BASE_URL": simulator.native_base,
             "SYNCSVC_PROVIDERS__SIM__API_KEY_ENV": SIM_KEY_ENV},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    building = [g for g in (await get_target(conn, "articles")).generations if g.dimensions == 256]
    assert [g.options for g in building] == [{}]


async def test_a_sparse_target_cannot_be_reembedded_through_a_wire_without_sparse(
    conn: AsyncConn, simulator: SimulatorThread
) -> None:
    settings = native_settings(simulator)
    compatible = simulator_settings(simulator, "dashscope-intl", name="compat").providers
    settings = settings.model_copy(update={"providers": {**settings.providers, **compatible}})
    await make_articles(conn, rows=2)
    await sparse_target(conn, settings, "articles", "articles", ("title", "body"))
    with pytest.raises(ValidationError, match="cannot return sparse vectors"):
        await jobs.request_reembed(
            conn, settings, "articles", model="text-embedding-v4", dimensions=64,
            provider="compat",
        )  # fmt: skip
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
    # Without the sparse vectors it may.
    job = await jobs.request_reembed(
        conn, settings, "articles", model="text-embedding-v4", dimensions=64,
        provider="compat", options={},
    )  # fmt: skip
    assert (await get_target(conn, "articles")).generations[-1].options == {}
    assert job.generation_id == (await get_target(conn, "articles")).generations[-1].id


async def test_a_psql_reembed_that_would_lose_its_sparse_wire_is_refused_when_called(
    conn: AsyncConn, simulator: SimulatorThread
) -> None:
    """``syncsvc.request_reembed`` checks against the models the daemons published."""
    settings = native_settings(simulator)
    compatible = simulator_settings(simulator, "dashscope-intl", name="compat").providers
    settings = settings.model_copy(update={"providers": {**settings.providers, **compatible}})
    await make_articles(conn, rows=2)
    await sparse_target(conn, settings, "articles", "articles", ("title", "body"))
    await publish_models(conn, settings)  # what a daemon with these settings does at start
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot return sparse"):
        await conn.execute(
            "SELECT syncsvc.request_reembed('articles', 'text-embedding-v4', 128, 'compat')"
        )
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.generations") == 1
