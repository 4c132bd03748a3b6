"""Search by text from SQL alone, as psql runs it (a plain autocommit connection), as the
reader role: CALL syncsvc.embed_query, then SELECT FROM syncsvc.search."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from syncsvc.core.types import AsyncConn
from syncsvc.db import privileges
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import READER, Deployment
from tests.helpers import queue_empty, running_daemon, scalar, text_targets, wait_for

DIMS = 64


async def _setup(conn: AsyncConn) -> None:
    await text_targets(conn, dimensions=DIMS)
    await privileges.grant_search(conn, READER)


def _psql_search(url: str, target: str, text: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as psql:
        psql.execute("CALL syncsvc.embed_query(%s, %s)", (target, text))
        rows = psql.execute(
            "SELECT (pk->>'id')::int FROM syncsvc.search(%s, %s, 3, 'id > 1')", (target, text)
        ).fetchall()
    return [r[0] for r in rows]


async def test_search_by_text_from_psql(conn: AsyncConn, deployment: Deployment) -> None:
    await _setup(conn)
    provider = LocalHashProvider()
    async with running_daemon(deployment.owner, provider=provider):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: _embedded(conn, 40))
        calls = provider.calls
        hits = await asyncio.to_thread(
            _psql_search, deployment.reader, "docs", "docs title 5 words of 5"
        )
        assert hits[0] == 5 and 1 not in hits  # the filter applies inside the search
        assert provider.calls == calls + 1
        # The same text again: answered from the cache, no API call and no wait.
        again = await asyncio.to_thread(
            _psql_search, deployment.reader, "docs", "docs title 5 words of 5"
        )
        assert again == hits and provider.calls == calls + 1
        assert (
            await asyncio.to_thread(
                _psql_search, deployment.reader, "notes", "notes title 7 words of 7"
            )
        )[0] == 7
    cached = await scalar(conn, "SELECT count(*) FROM syncsvc.query_cache")
    assert cached == 2
    with psycopg.connect(deployment.reader, autocommit=True) as psql:
        with pytest.raises(psycopg.errors.NoDataFound, match=r"CALL syncsvc.embed_query\('docs'"):
            psql.execute("SELECT * FROM syncsvc.search('docs', 'never asked', 3)")
        # A searcher cannot forge what another text's search would read: the key is derived.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            psql.execute(
                "INSERT INTO syncsvc.query_requests (generation_id, query, text_hash) "
                "VALUES (1, 'x', sha256('docs title 5 words of 5'))"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            psql.execute("UPDATE syncsvc.query_requests SET query_hash = sha256('x')")
        # No daemon running: the wait is bounded and says why.
        with pytest.raises(psycopg.errors.QueryCanceled, match="is 'syncsvc run' running"):
            psql.execute("CALL syncsvc.embed_query('docs', 'nobody answers', 0.3)")


async def _embedded(conn: AsyncConn, n: int) -> bool:
    total = await scalar(
        conn,
        "SELECT (SELECT count(*) FROM syncsvc.docs_embeddings) "
        "+ (SELECT count(*) FROM syncsvc.notes_embeddings)",
    )
    return bool(total == n)
