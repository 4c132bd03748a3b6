"""Administration from SQL alone, as psql runs it (plain autocommit connections, the owner
role): register a table, watch it embed, search by text, re-embed, promote and remove it,
with a healthy second target beside it the whole time."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import psycopg
import pytest

from syncsvc.core.types import AsyncConn
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import Deployment
from tests.helpers import expected, running_daemon, scalar, text_targets, wait_for

DIMS = 64


def psql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(query, params)
        return cur.fetchall() if cur.description else []


def request_and_wait(url: str, query: str, params: Any = None) -> Any:
    """File a request with one SQL call, then wait for its outcome as psql would."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(query, params).fetchone()
        assert row is not None
        outcome = c.execute("CALL syncsvc.wait_request(%s, 20)", (row[0],)).fetchone()
        assert outcome is not None
        return outcome[0]


def search_text(url: str, target: str, text: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CALL syncsvc.embed_query(%s, %s)", (target, text))
        rows = c.execute(
            "SELECT (pk->>'id')::int FROM syncsvc.search(%s, %s, 3)", (target, text)
        ).fetchall()
    return [r[0] for r in rows]


async def status_of(conn: AsyncConn, target: str) -> dict[str, Any]:
    cur = await conn.execute("SELECT * FROM syncsvc.status WHERE target = %s", (target,))
    row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def embedded(conn: AsyncConn, target: str, rows: int) -> bool:
    found = await status_of(conn, target)
    return bool(found["embedded"] == rows and found["pending"] == 0 and found["in_flight"] == 0)


async def test_register_embed_search_reembed_promote_remove_from_sql_alone(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await text_targets(conn, names=("notes",), dimensions=DIMS)  # the healthy neighbour
    owner, writer = deployment.owner, deployment.writer
    psql(owner, "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    psql(
        writer,
        "INSERT INTO docs SELECT i, 'title ' || i, 'body ' || i FROM generate_series(1, 10) i",
    )
    provider = LocalHashProvider()
    async with running_daemon(owner, provider=provider):
        added = await asyncio.to_thread(
            request_and_wait,
            owner,
            "SELECT syncsvc.add_target('docs', 'docs', '{title,body}', 'local-hash', %s, "
            "'local-hash', template => '{title}: {body}')",
            (DIMS,),
        )
        assert added["target"] == "docs" and added["view"] == "syncsvc.docs_embeddings"
        assert (added["model"], added["dimensions"], added["key"]) == ("local-hash", DIMS, ["id"])
        await wait_for(lambda: embedded(conn, "docs", 10))
        stored = await scalar(conn, "SELECT embedding FROM syncsvc.docs_embeddings WHERE id = 3")
        np.testing.assert_allclose(stored.to_numpy(), expected("title 3: body 3", DIMS), atol=1e-6)
        # The application's writes are captured as for any target.
        psql(writer, "INSERT INTO docs VALUES (11, 'eleven', 'more')")
        await wait_for(lambda: embedded(conn, "docs", 11))

        hits = await asyncio.to_thread(search_text, owner, "docs", "title 3: body 3")
        assert hits[0] == 3

        job_id = psql(owner, "SELECT syncsvc.request_reembed('docs', 'local-hash', 128)")[0][0]

        async def completed() -> bool:
            state = await scalar(
                conn, "SELECT state FROM syncsvc.job_status WHERE id = %s", (job_id,)
            )
            return bool(state == "completed")

        await wait_for(completed)
        generation = await scalar(
            conn, "SELECT generation_id FROM syncsvc.job_status WHERE id = %s", (job_id,)
        )
        promoted = await asyncio.to_thread(
            request_and_wait, owner, "SELECT syncsvc.promote('docs', %s)", (generation,)
        )
        assert promoted["generation"] == generation and promoted["previous"] == added["generation"]
        assert (promoted["rows"], promoted["current"], promoted["missing"]) == (11, 11, 0)
        now = await status_of(conn, "docs")
        assert (now["active_generation"], now["dimensions"], now["embedded"]) == (
            generation,
            128,
            11,
        )
        assert (await asyncio.to_thread(search_text, owner, "docs", "eleven: more"))[0] == 11

        removed = await asyncio.to_thread(
            request_and_wait, owner, "SELECT syncsvc.remove_target('docs')"
        )
        assert removed["target"] == "docs"
        # The neighbour kept embedding throughout, and still does.
        psql(writer, "UPDATE notes SET body = 'edited' WHERE id = 2")

        async def notes_edited() -> bool:
            v = await scalar(conn, "SELECT embedding FROM syncsvc.notes_embeddings WHERE id = 2")
            return bool(
                np.allclose(v.to_numpy(), expected("notes title 2\n\nedited", DIMS), atol=1e-6)
            )

        await wait_for(notes_edited)
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets WHERE name = 'docs'") == 0
    triggers = (
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal"
    )
    assert await scalar(conn, triggers) == 0
    assert await scalar(conn, "SELECT to_regclass('syncsvc.docs_embeddings') IS NULL") is True
    psql(writer, "INSERT INTO docs VALUES (12, 'after', 'removal')")  # the application goes on
    notes = await status_of(conn, "notes")
    assert (notes["embedded"], notes["failed"], notes["paused_reason"]) == (20, 0, None)
    states = await conn.execute("SELECT action, state FROM syncsvc.requests ORDER BY id")
    assert [tuple(r.values()) for r in await states.fetchall()] == [
        ("add_target", "done"),
        ("promote", "done"),
        ("remove_target", "done"),
    ]


async def test_sql_requests_are_validated_when_called(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await text_targets(conn, dimensions=DIMS)
    owner = deployment.owner
    before = await scalar(conn, "SELECT count(*) FROM syncsvc.generations")
    cases = [
        ("SELECT syncsvc.request_reembed('docs', 'no-such-model', 64)", "does not offer model"),
        ("SELECT syncsvc.request_reembed('docs', 'local-hash', 100)", "does not offer 100 dim"),
        ("SELECT syncsvc.request_reembed('docs', 'm', 64, 'nope')", "unknown provider nope"),
        (
            "SELECT syncsvc.add_target('x', 'docs', '{title}', 'text-embedding-v4')",
            "name the provider of model text-embedding-v4",
        ),
        ("SELECT syncsvc.add_target('docs', 'docs', '{title}', 'local-hash')", "already exists"),
        ("SELECT syncsvc.add_target('x', 'nosuch', '{title}', 'local-hash')", "does not exist"),
        ("SELECT syncsvc.remove_target('nosuch')", "no target named nosuch"),
        ("SELECT syncsvc.promote('docs', 999)", "has no generation 999"),
    ]
    for query, message in cases:
        with pytest.raises(psycopg.Error, match=message):
            psql(owner, query)
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.generations") == before
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.requests") == 0

    # Filed in an open transaction, a request cannot be waited for: the error says so.
    with psycopg.connect(owner) as c:
        request = c.execute(
            "SELECT syncsvc.add_target('x', 'docs', '{title}', 'local-hash', 64)"
        ).fetchone()
        assert request is not None
        with pytest.raises(psycopg.errors.InvalidTransactionState, match="commit, then wait"):
            c.execute("CALL syncsvc.wait_request(%s, 1)", (request[0],))

    # What only Python can check fails the request with the reason, and changes nothing.
    async with running_daemon(owner):
        with pytest.raises(psycopg.Error, match="column 'nope' does not exist"):
            await asyncio.to_thread(
                request_and_wait,
                owner,
                "SELECT syncsvc.add_target('bad', 'docs', '{nope}', 'local-hash', 64)",
            )
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets WHERE name = 'bad'") == 0
    failed = await scalar(conn, "SELECT error FROM syncsvc.requests WHERE target = 'bad'")
    assert "column 'nope' does not exist" in failed
    # Without a daemon the wait is bounded and says why.
    with psycopg.connect(owner, autocommit=True) as c:
        c.execute("SELECT syncsvc.remove_target('notes')")
        rid = await scalar(conn, "SELECT max(id) FROM syncsvc.requests")
        with pytest.raises(psycopg.errors.QueryCanceled, match="is 'syncsvc run' running"):
            c.execute("CALL syncsvc.wait_request(%s, 0.3)", (rid,))
    notes = await status_of(conn, "notes")
    assert notes["target"] == "notes" and notes["paused_reason"] is None


@pytest.mark.parametrize("role", ["writer", "reader"])
async def test_only_the_owner_administers(
    conn: AsyncConn, deployment: Deployment, role: str
) -> None:
    await text_targets(conn, dimensions=DIMS)
    url = getattr(deployment, role)
    for query in (
        "SELECT syncsvc.add_target('x', 'docs', '{title}', 'local-hash', 64)",
        "SELECT syncsvc.remove_target('docs')",
        "SELECT syncsvc.promote('docs', 1)",
        "SELECT syncsvc.retry_failed()",
        "SELECT syncsvc.pause_target('docs')",
        "SELECT syncsvc.request_reembed('docs', 'local-hash', 128)",
        "SELECT * FROM syncsvc.status",
        "INSERT INTO syncsvc.requests (action, target) VALUES ('remove_target', 'docs')",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            psql(url, query)
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.requests") == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 2


async def test_a_request_on_a_busy_table_gives_up_instead_of_queueing_the_application(
    conn: AsyncConn, deployment: Deployment
) -> None:
    """DDL waiting for its lock would queue the application's writes behind it: the daemon
    gives up after a few seconds, fails the request with the reason, and embeds on."""
    await text_targets(conn, names=("notes",), dimensions=DIMS)
    psql(deployment.owner, "CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    async with running_daemon(deployment.owner):
        with psycopg.connect(deployment.writer) as app:
            app.execute("INSERT INTO docs VALUES (1, 'held', 'by an open transaction')")
            with pytest.raises(psycopg.Error, match="a table was busy: could not lock it"):
                await asyncio.to_thread(
                    request_and_wait,
                    deployment.owner,
                    "SELECT syncsvc.add_target('docs', 'docs', '{title,body}', 'local-hash', 64)",
                )
            app.commit()
        psql(deployment.writer, "UPDATE notes SET body = 'still embedded' WHERE id = 1")

        async def notes_current() -> bool:
            v = await scalar(conn, "SELECT embedding FROM syncsvc.notes_embeddings WHERE id = 1")
            return bool(
                np.allclose(
                    v.to_numpy(), expected("notes title 1\n\nstill embedded", DIMS), atol=1e-6
                )
            )

        await wait_for(notes_current)
        # Once the table is free the same request goes through.
        added = await asyncio.to_thread(
            request_and_wait,
            deployment.owner,
            "SELECT syncsvc.add_target('docs', 'docs', '{title,body}', 'local-hash', 64)",
        )
        assert added["target"] == "docs"
    assert await scalar(conn, "SELECT count(*) FROM docs") == 1
