"""Least privilege: syncsvc runs as a non-superuser owner, the application writes as a role with
no rights in schema syncsvc, searchers get exactly ``syncsvc grant search`` and keep it."""

from __future__ import annotations

import asyncio

import numpy as np
import psycopg
import pytest

from syncsvc import jobs
from syncsvc.api.client import AsyncClient
from syncsvc.core.types import AsyncConn
from syncsvc.db import privileges
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.jobs import JobState
from syncsvc.ops import migrate
from syncsvc.providers.local import LocalHashProvider
from syncsvc.store import indexes, promote
from tests.conftest import OWNER, READER, WRITER, Cluster, Deployment
from tests.helpers import (
    expected,
    fast_settings,
    queue_empty,
    running_daemon,
    scalar,
    text_targets,
    wait_for,
)
from tests.jobs_support import job_settings

DIMS = 64


async def _two_targets(conn: AsyncConn) -> None:
    """``docs`` (the one under test) and ``notes`` (the healthy neighbour)."""
    await text_targets(conn, dimensions=DIMS)


async def _vectors(conn: AsyncConn, view: str) -> int:
    return int(await scalar(conn, f"SELECT count(*) FROM syncsvc.{view}_embeddings"))


async def test_migrate_runs_as_the_non_superuser_owner(empty_db_url: str) -> None:
    await asyncio.to_thread(migrate.upgrade, empty_db_url)
    async with await aconnect(empty_db_url) as conn:
        assert (
            await scalar(conn, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            is False
        )
        owners = await conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class "
            "WHERE relnamespace = 'syncsvc'::regnamespace"
        )
        assert [r["owner"] for r in await owners.fetchall()] == [OWNER]
        # pgvector 0.8's iterative scans are on the search function, set by the owner.
        config = await scalar(
            conn,
            "SELECT proconfig FROM pg_proc WHERE oid = "
            "'syncsvc.search_by_vector(text, vector, integer, text, integer)'::regprocedure",
        )
        assert config == ["hnsw.iterative_scan=relaxed_order"]


def test_offline_sql_runs_as_the_owner(cluster: Cluster) -> None:
    made = cluster.deployment("offline_sql_owner", migrated=False)
    try:
        ddl = migrate.upgrade_sql()
        with psycopg.connect(made.owner, autocommit=True) as conn:
            conn.execute(ddl)  # type: ignore[call-overload]
            heads = conn.execute("SELECT count(*) FROM syncsvc.alembic_version").fetchone()
            assert heads is not None and heads[0] >= 1
            assert conn.execute("SELECT to_regclass('syncsvc.search_grants')").fetchone() == (
                "syncsvc.search_grants",
            )
    finally:
        cluster.drop(made)


async def test_definer_functions_are_not_executable_by_public(conn: AsyncConn) -> None:
    await _two_targets(conn)
    functions = await privileges.definer_functions(conn)
    names = sorted(f.function for f in functions)
    docs = (await get_target(conn, "docs")).id
    notes = (await get_target(conn, "notes")).id
    assert names == sorted(
        [f"syncsvc.capture_{docs}()", f"syncsvc.capture_{notes}()", "syncsvc.on_truncate()"]
    )
    assert [f.function for f in functions if f.public_execute] == []
    assert all(f.pins_search_path for f in functions)
    for role in (READER, WRITER):
        allowed = await scalar(
            conn,
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'syncsvc'::regnamespace "
            "AND prosecdef AND has_function_privilege(%s, oid, 'EXECUTE')",
            (role,),
        )
        assert allowed == 0, role


async def test_reader_cannot_aim_definer_functions_at_its_own_table(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _two_targets(conn)
    await privileges.grant_search(conn, READER)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: queue_empty(conn))
    assert (await _vectors(conn, "docs"), await _vectors(conn, "notes")) == (20, 20)
    docs = (await get_target(conn, "docs")).id
    queued = int(await scalar(conn, "SELECT count(*) FROM syncsvc.inbox"))

    with psycopg.connect(deployment.reader, autocommit=True) as reader:
        assert reader.execute("SELECT has_schema_privilege('syncsvc', 'USAGE')").fetchone() == (
            True,
        )
        reader.execute("CREATE TEMP TABLE bait (id int PRIMARY KEY, title text)")
        for function, event in (
            (f"syncsvc.on_truncate('{docs}')", "TRUNCATE"),
            (f"syncsvc.capture_{docs}()", "DELETE"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
                reader.execute(
                    f"CREATE TRIGGER t AFTER {event} ON bait "
                    f"FOR EACH STATEMENT EXECUTE FUNCTION {function}"
                )
        reader.execute("TRUNCATE bait")
    assert (await _vectors(conn, "docs"), await _vectors(conn, "notes")) == (20, 20)
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == queued

    # Even the owner's own mistake cannot wipe a target from another table.
    await conn.execute("CREATE TABLE stray (id int)")
    await conn.execute(
        "CREATE TRIGGER t AFTER TRUNCATE ON stray "
        f"FOR EACH STATEMENT EXECUTE FUNCTION syncsvc.on_truncate('{docs}')"
    )
    await conn.execute("TRUNCATE stray")
    assert (await _vectors(conn, "docs"), await _vectors(conn, "notes")) == (20, 20)


async def test_the_writer_has_no_rights_in_syncsvc_and_is_captured(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _two_targets(conn)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: queue_empty(conn))
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            rights = writer.execute(
                "SELECT has_schema_privilege('syncsvc', 'USAGE'), "
                "has_schema_privilege('syncsvc', 'CREATE')"
            ).fetchone()
            assert rights == (False, False)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute("SELECT count(*) FROM syncsvc.queue")
            writer.execute("UPDATE docs SET body = 'edited by the app' WHERE id = 3")
            writer.execute("INSERT INTO docs VALUES (21, 'new', 'written by the app')")
            writer.execute("DELETE FROM docs WHERE id = 4")
            writer.execute("UPDATE notes SET title = 'note edited' WHERE id = 1")
        await wait_for(lambda: queue_empty(conn))
    for table in ("docs", "notes"):
        cur = await conn.execute(
            f"SELECT d.id, concat(d.title, E'\\n\\n', d.body) AS text, v.embedding "
            f"FROM {table} d FULL JOIN syncsvc.{table}_embeddings v USING (id) ORDER BY 1"
        )
        rows = await cur.fetchall()
        assert len(rows) == 20
        for row in rows:
            np.testing.assert_allclose(
                row["embedding"].to_numpy(), expected(row["text"], DIMS), rtol=1e-6, atol=1e-7
            )
    assert await scalar(conn, "SELECT 4 NOT IN (SELECT id FROM syncsvc.docs_embeddings)")


async def _reader_searches(
    url: str, target: str, dims: int = DIMS
) -> tuple[list[int], list[int], list[int]]:
    """By vector and by row in SQL, and by text through the Python client, as the reader."""
    probe = [float(x) for x in expected(f"{target} title 5\n\nwords of 5", dims)]
    with psycopg.connect(url, autocommit=True) as reader:
        by_vector = reader.execute(
            "SELECT (pk->>'id')::int FROM syncsvc.search_by_vector(%s, %s::text::vector, 3)",
            (target, str(probe)),
        ).fetchall()
        by_row = reader.execute(
            "SELECT (pk->>'id')::int FROM syncsvc.similar_rows(%s, '5', 3)", (target,)
        ).fetchall()
    async with AsyncClient(
        url, fast_settings(), provider_factory=lambda _: LocalHashProvider()
    ) as client:
        hits = await client.search(target, f"{target} title 5 words of 5", k=3)
    return [r[0] for r in by_vector], [r[0] for r in by_row], [h.row["id"] for h in hits]


async def test_reader_search_survives_promote_new_targets_and_migrate(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _two_targets(conn)
    assert await privileges.grant_search(conn, READER) == 2
    async with running_daemon(deployment.owner, job_settings()):
        await wait_for(lambda: queue_empty(conn))
        before = await _reader_searches(deployment.reader, "docs")
        assert before[0][0] == 5 and before[2][0] == 5 and 5 not in before[1]

        job = await jobs.request_reembed(
            conn, job_settings(), "docs", model="local-hash", dimensions=128
        )
        await wait_for(lambda: _job_done(conn, job.id))
        await wait_for(lambda: queue_empty(conn))
        await promote.promote(conn, "docs", job.generation_id)
        target = await get_target(conn, "docs")
        assert target.active is not None and target.active.dimensions == 128
        await indexes.build_index(conn, target, target.active)

        # A target added after the grant is searchable too.
        await text_targets(conn, ("later",), dimensions=DIMS)
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: _has_vectors(conn, "later", 20))

    after = await _reader_searches(deployment.reader, "docs", 128)
    assert after[0][0] == 5 and after[2][0] == 5
    assert (await _reader_searches(deployment.reader, "later"))[0][0] == 5
    assert (await _reader_searches(deployment.reader, "notes"))[0][0] == 5

    # A grant lost behind syncsvc's back (or by an upgrade's DDL) comes back with migrate.
    active = (await get_target(conn, "docs")).active
    assert active is not None
    await conn.execute(f"REVOKE SELECT ON syncsvc.{active.table_name} FROM {READER}")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        await _reader_searches(deployment.reader, "docs", 128)
    await asyncio.to_thread(migrate.upgrade, deployment.owner)
    assert (await _reader_searches(deployment.reader, "docs", 128))[0][0] == 5

    # The reader read the cache but never wrote it: no searcher can plant a query vector.
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.query_cache") == 0
    with (
        psycopg.connect(deployment.reader, autocommit=True) as reader,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        reader.execute("DELETE FROM syncsvc.query_cache")


async def test_grant_search_for_one_target_only(conn: AsyncConn, deployment: Deployment) -> None:
    await _two_targets(conn)
    await privileges.grant_search(conn, READER, "notes")
    probe = "[" + ",".join(["1"] + ["0"] * (DIMS - 1)) + "]"
    search = "SELECT count(*) FROM syncsvc.search_by_vector(%s, %s::vector, 3)"
    with psycopg.connect(deployment.reader, autocommit=True) as reader:
        assert reader.execute(search, ("notes", probe)).fetchone() == (0,)  # nothing embedded yet
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute(search, ("docs", probe))
    grants = await privileges.search_grants(conn)
    assert [(g.role, g.target) for g in grants] == [(READER, "notes")]
    await privileges.revoke_search(conn, READER)
    with psycopg.connect(deployment.reader, autocommit=True) as reader:
        assert reader.execute("SELECT has_schema_privilege('syncsvc', 'USAGE')").fetchone() == (
            False,
        )


async def _job_done(conn: AsyncConn, job_id: int) -> bool:
    return (await jobs.get_job(conn, job_id)).state is JobState.COMPLETED


async def _has_vectors(conn: AsyncConn, target: str, n: int) -> bool:
    return await _vectors(conn, target) == n
