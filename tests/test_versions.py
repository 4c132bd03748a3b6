"""The core path on both PostgreSQL versions the embedded package ships, as users deploy it:
the owner migrates, registers and runs; the application writes as the writer; the reader
searches before and after a re-embed and promote. A second target stays healthy throughout."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import psycopg
import pytest

from syncsvc import jobs
from syncsvc.api.client import AsyncClient
from syncsvc.capture import targets
from syncsvc.core.types import AsyncConn
from syncsvc.db import privileges
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.jobs import JobState
from syncsvc.ops import migrate
from syncsvc.providers.local import LocalHashProvider
from syncsvc.store import promote
from tests.conftest import READER, Cluster, Deployment
from tests.helpers import expected, fast_settings, queue_empty, running_daemon, scalar, wait_for
from tests.jobs_support import job_settings


@pytest.fixture(params=[16, 18], ids=lambda v: f"pg{v}")
def versioned(
    request: pytest.FixtureRequest, clusters: Callable[[int | None], Cluster]
) -> Iterator[tuple[int, Deployment]]:
    cluster = clusters(request.param)
    made = cluster.deployment(f"core_{request.param}", migrated=False)
    yield request.param, made
    cluster.drop(made)


async def test_core_path_as_owner_writer_and_reader(
    versioned: tuple[int, Deployment],
) -> None:
    version, deployment = versioned
    await _core_path(version, deployment)


async def _core_path(version: int, versioned: Deployment) -> None:
    await asyncio.to_thread(migrate.upgrade, versioned.owner)
    async with await aconnect(versioned.owner) as conn:
        for table in ("docs", "notes"):
            await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, title text, body text)")
            await conn.execute(
                f"INSERT INTO {table} SELECT i, 'title ' || i, 'words of ' || i "
                "FROM generate_series(1, 30) i"
            )
            spec = targets.TargetSpec(
                name=table,
                table=table,
                columns=("title", "body"),
                model="local-hash",
                dimensions=64,
            )
            await targets.add_target(conn, fast_settings(), spec)
        await privileges.grant_search(conn, READER)
        async with running_daemon(versioned.owner, job_settings()):
            await wait_for(lambda: queue_empty(conn))
            with psycopg.connect(versioned.writer, autocommit=True) as writer:
                writer.execute("UPDATE docs SET body = 'a brand new body' WHERE id = 7")
                writer.execute("UPDATE notes SET body = 'notes edited' WHERE id = 8")
            await wait_for(lambda: queue_empty(conn))
            stored = await scalar(
                conn, "SELECT embedding FROM syncsvc.docs_embeddings WHERE id = 7"
            )
            assert stored.to_list() == pytest.approx(
                list(expected("title 7\n\na brand new body", 64)), abs=1e-6
            )
            assert await _reader_top(versioned.reader, "docs", "title 7 a brand new body") == 7

            job = await jobs.request_reembed(
                conn, job_settings(), "docs", model="local-hash", dimensions=128
            )
            await wait_for(lambda: _completed(conn, job.id))
            await wait_for(lambda: queue_empty(conn))
        await promote.promote(conn, "docs", job.generation_id)
        target = await get_target(conn, "docs")
        assert target.active is not None and target.active.id == job.generation_id
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.docs_embeddings") == 30
        assert (
            await scalar(conn, "SELECT vector_dims(embedding) FROM syncsvc.docs_embeddings LIMIT 1")
            == 128
        )
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.notes_embeddings") == 30
        assert await _reader_top(versioned.reader, "docs", "title 7 a brand new body") == 7
        assert await _reader_top(versioned.reader, "notes", "title 8 notes edited") == 8
        assert conn.info.server_version // 10000 == version


async def _reader_top(url: str, target: str, text: str) -> int:
    async with AsyncClient(
        url, fast_settings(), provider_factory=lambda _: LocalHashProvider()
    ) as client:
        hits = await client.search(target, text, k=3)
    return int(hits[0].row["id"])


async def _completed(conn: AsyncConn, job_id: int) -> bool:
    return (await jobs.get_job(conn, job_id)).state is JobState.COMPLETED
