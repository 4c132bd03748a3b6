"""The inbox carries no foreign key (a key check per application statement cost it half its
capture time): a removed target's captured keys go with it, and keys a writer captured while
its target was being removed never reach the queue. Runs as the owner and the writer."""

from __future__ import annotations

import psycopg

from syncsvc.capture import targets
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles
from tests.conftest import Deployment
from tests.helpers import scalar, text_targets


async def test_removed_target_leaves_no_keys(conn: AsyncConn, deployment: Deployment) -> None:
    await text_targets(conn, rows=3)
    await conn.execute("DELETE FROM syncsvc.inbox")
    with psycopg.connect(deployment.writer, autocommit=True) as app:
        app.execute("UPDATE docs SET body = 'edited ' || id")
        app.execute("UPDATE notes SET body = 'edited ' || id")
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 2
    await targets.remove_target(conn, "docs")
    # Only the healthy neighbour's keys remain.
    rows = await (
        await conn.execute(
            "SELECT t.name, i.pks FROM syncsvc.inbox i JOIN syncsvc.targets t ON t.id = i.target_id"
        )
    ).fetchall()
    assert [(r["name"], r["pks"]) for r in rows] == [("notes", [[1], [2], [3]])]
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 1


async def test_keys_of_a_vanished_target_are_skipped(conn: AsyncConn) -> None:
    await text_targets(conn, rows=2)
    await conn.execute("DELETE FROM syncsvc.inbox")
    await conn.execute("DELETE FROM syncsvc.queue")
    notes = await scalar(conn, "SELECT id FROM syncsvc.targets WHERE name = 'notes'")
    # As a writer's commit after the target's removal leaves it: no target 999 exists.
    await conn.execute(
        "INSERT INTO syncsvc.inbox (target_id, pks) VALUES (999, '[[1]]'), (%s, '[[2]]')",
        (notes,),
    )
    await conn.execute(sqlfiles.query("queue", "expand_inbox"), {"limit": 100})
    queued = await (await conn.execute("SELECT target_id, pk FROM syncsvc.queue")).fetchall()
    assert [(r["target_id"], r["pk"]) for r in queued] == [(notes, [2])]
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.inbox") == 0


async def test_foreign_key_is_gone(conn: AsyncConn) -> None:
    assert (
        await scalar(
            conn,
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'syncsvc.inbox'::regclass "
            "AND contype = 'f'",
        )
        == 0
    )
