"""Issue 22, item 2: no user input reaches SQL as a placeholder or as code.

Table, column and key names, templates, row text, filters and query text are drawn (fixed
seed) from characters that mean something to psycopg, to ``str.format`` or to SQL: ``%``,
``{``, ``}``, quotes, ``$$``, backslashes, non-ASCII. Each drawn target goes through add →
backfill → live edit → hybrid search → status beside a plain, healthy target.
"""

from __future__ import annotations

import html
import random
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from psycopg import sql

from syncsvc import AsyncClient, jobs
from syncsvc.capture import targets
from syncsvc.core.errors import ValidationError
from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting
from syncsvc.db.database import create_pool
from syncsvc.db.quoting import ident
from syncsvc.observe import status
from syncsvc.providers.local import LocalHashProvider
from syncsvc.web.app import create_app
from syncsvc.web.auth import AdminAccess
from tests.helpers import (
    expected,
    fast_settings,
    queue_empty,
    running_daemon,
    scalar,
    text_targets,
    wait_for,
)
from tests.ops_support import web_settings

DIMS = 64
PIECES = ["%", "%s", "%(x)s", "%%", "{", "}", "{}", "{0}", "'", '"', "$$", "$1", "\\", "\\n"]
PIECES += ["é", "漢字", "🙂", " ", ".", ":", "!", "-", "a", "b", "x", "Ω"]


def _draw(rng: random.Random, parts: int) -> str:
    return "".join(rng.choice(PIECES) for _ in range(parts)) + rng.choice("abcxyz")


def _field(name: str) -> str:
    if "{" in name or "}" in name or name.startswith('"'):
        return '{"' + name.replace('"', '""') + '"}'
    return "{" + name + "}"


def _literal(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


@dataclass(frozen=True)
class Case:
    name: str
    table: str
    key: str
    first: str
    second: str
    template: str | None
    """None: the default template (the embedded columns, blank lines between)."""
    literals: tuple[str, str, str]

    def render(self, first: str | None, second: str | None) -> str:
        if self.template is None:
            return f"{first or ''}\n\n{second or ''}"
        a, b, c = self.literals
        return f"{a}{first or ''}{b}{second or ''}{c}"


def _cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for i in range(count):
        first, second, key = (_draw(rng, 3) + f"{i}{n}" for n in "fsk")
        literals = (_draw(rng, 2), _draw(rng, 3), _draw(rng, 1))
        template = None
        if i % 3:
            a, b, c = literals
            template = f"{_literal(a)}{_field(first)}{_literal(b)}{_field(second)}{_literal(c)}"
        cases.append(Case(f"hostile_{i}", _draw(rng, 4) + str(i), key, first, second, template,
                          literals))  # fmt: skip
    return cases


def _row_text(rng: random.Random, n: int) -> str:
    return f"word{n} " + _draw(rng, 5) + f" {n}"


async def _create(conn: AsyncConn, case: Case, rows: list[tuple[int, str, str]]) -> None:
    # The key's type is a domain with a hostile name too: queue keys are cast to it.
    domain = ident(f"key% '{case.name}")
    await conn.execute(sql.SQL("CREATE DOMAIN {} AS int").format(domain))
    await conn.execute(
        sql.SQL("CREATE TABLE {} ({} {} PRIMARY KEY, {} text, {} text)").format(
            ident(case.table),
            ident(case.key),
            domain,
            ident(case.first),
            ident(case.second),
        )
    )
    await _insert(conn, case, rows)


async def _insert(conn: AsyncConn, case: Case, rows: list[tuple[int, str, str]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            sql.SQL("INSERT INTO {} VALUES (%s, %s, %s)").format(ident(case.table)), rows
        )


async def _texts(conn: AsyncConn, case: Case) -> dict[int, str]:
    cur = await conn.execute(
        sql.SQL("SELECT {} AS k, {} AS a, {} AS b FROM {}").format(
            ident(case.key),
            ident(case.first),
            ident(case.second),
            ident(case.table),
        )
    )
    return {r["k"]: case.render(r["a"], r["b"]) for r in await cur.fetchall()}


async def _vectors(conn: AsyncConn, name: str) -> dict[int, Any]:
    cur = await conn.execute(
        "SELECT g.table_name FROM syncsvc.generations g JOIN syncsvc.targets t"
        " ON t.id = g.target_id WHERE t.name = %s AND g.state = 'active'",
        (name,),
    )
    row = await cur.fetchone()
    assert row is not None
    table = ident("syncsvc", row["table_name"])
    cur = await conn.execute(sql.SQL("SELECT * FROM {}").format(table))
    return {r[next(iter(r))]: r["embedding"].to_numpy() for r in await cur.fetchall()}


async def test_hostile_names_templates_and_text_work_end_to_end(
    conn: AsyncConn, db_url: str
) -> None:
    rng = random.Random(22)
    cases = _cases(22, 6)
    settings = fast_settings()
    await conn.execute("CREATE TABLE healthy (id int PRIMARY KEY, body text)")
    await conn.execute(
        "INSERT INTO healthy SELECT i, 'healthy row ' || i FROM generate_series(1, 5) i"
    )
    await targets.add_target(
        conn,
        settings,
        targets.TargetSpec(
            name="healthy", table="healthy", columns=("body",), model="local-hash", dimensions=DIMS
        ),
    )
    for case in cases:
        await _create(conn, case, [(n, _row_text(rng, n), _row_text(rng, n + 100)) for n in (1, 2)])
        spec = targets.TargetSpec(
            name=case.name,
            table='"' + case.table.replace('"', '""') + '"',
            columns=(case.first, case.second),
            model="local-hash",
            dimensions=DIMS,
            template=case.template,
        )
        await targets.add_target(conn, settings, spec)
    names = ["healthy", *(c.name for c in cases)]
    async with running_daemon(db_url, settings):
        # Live edits: an insert, an update of a key column value's text, a NULL column.
        for case in cases:
            await _insert(conn, case, [(3, _row_text(rng, 3), _row_text(rng, 4))])
            await conn.execute(
                sql.SQL("UPDATE {} SET {} = %s, {} = NULL WHERE {} = 1").format(
                    ident(case.table),
                    ident(case.first),
                    ident(case.second),
                    ident(case.key),
                ),
                (_row_text(rng, 5),),
            )
        await conn.execute("INSERT INTO healthy VALUES (6, 'healthy row 6')")

        async def all_synced() -> bool:
            if not await queue_empty(conn):
                return False
            counts = await status.collect(conn)
            return len(counts) == len(names) and all(s.embedded == s.rows for s in counts)

        await wait_for(all_synced, 60)
        # A re-embedding job (the backfill path) of every such target, promoted when done.
        for case in cases:
            await jobs.request_reembed(
                conn, settings, case.name, model="local-hash", dimensions=128, auto_promote=True
            )

        async def jobs_done() -> bool:
            states = await conn.execute("SELECT state, error FROM syncsvc.jobs")
            rows = await states.fetchall()
            assert all(r["state"] != "failed" for r in rows), rows
            return all(r["state"] == "completed" for r in rows)

        await wait_for(jobs_done, 60)
    paused = await scalar(
        conn, "SELECT count(*) FROM syncsvc.targets WHERE paused_reason IS NOT NULL"
    )
    assert paused == 0
    for case in cases:
        texts = await _texts(conn, case)
        stored = await _vectors(conn, case.name)
        assert set(stored) == {1, 2, 3}
        for pk, text in texts.items():
            np.testing.assert_allclose(stored[pk], expected(text, 128), rtol=1e-6, atol=1e-7)
    assert len(await _vectors(conn, "healthy")) == 6

    async with AsyncClient(
        db_url, settings, provider_factory=lambda _: LocalHashProvider()
    ) as client:
        for case in cases:
            query = "word3 100% {x} 'q' $$ \\ 漢字 %(k)s"
            # The filter is the caller's SQL over the source row; with params its own % are
            # placeholders (psycopg's rule: %% for a literal one), without params it is as is.
            first, second = ident("s", case.first), ident("s", case.second)
            filters: list[tuple[str, dict[str, str] | None]] = [
                (
                    sql.SQL("{} LIKE %(pattern)s OR {} <> '100%% {{}}'")
                    .format(first, second)
                    .as_string(None),
                    {"pattern": "%word%"},
                ),
                (
                    sql.SQL("{} LIKE '%word%' OR {} <> '100% {{}} $$'")
                    .format(first, second)
                    .as_string(None),
                    None,
                ),
            ]
            for where, params in filters:
                for hybrid in (False, True):
                    hits = await client.search(
                        case.name, query, k=3, hybrid=hybrid, where=where, params=params
                    )
                    assert hits and {h.pk[case.key] for h in hits} <= {1, 2, 3}
            with pytest.raises(ValidationError, match="write %% for a literal %"):
                await client.search(case.name, query, where="s.x <> '100% off'", params={})
        assert await client.search("healthy", "healthy row", k=2)
        report = {s.target: s for s in await client.status()}
        assert set(report) == set(names)
    # The admin page shows every such table, as text.
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open()
    app = create_app(pool, web_settings(), AdminAccess(True, None))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
        ) as web:
            page = await web.get("/admin")
            assert page.status_code == 200
            for case in cases:
                assert f"public.{case.table}<" in html.unescape(page.text), case.table
            origin = {"Origin": "http://127.0.0.1"}
            for case in cases:
                done = await web.post(
                    "/admin/retry-failed", data={"target": case.name}, headers=origin
                )
                assert done.status_code == 303
    finally:
        await pool.close()


async def _paused_reason(conn: AsyncConn, name: str) -> str | None:
    cur = await conn.execute("SELECT paused_reason FROM syncsvc.targets WHERE name = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return row["paused_reason"]  # type: ignore[no-any-return]


async def test_a_percent_in_a_template_is_text(conn: AsyncConn, db_url: str) -> None:
    """The issue's report: ``--template "{title} 100% {body}"`` was accepted, never
    backfilled, broke hybrid search and made a restarted daemon exit."""
    await text_targets(conn, names=("pct", "notes"), rows=3, template="{title} 100% {body}")
    settings = fast_settings()
    for _ in range(2):  # a restarted daemon starts, and carries on
        async with running_daemon(db_url, settings):
            await conn.execute("INSERT INTO pct VALUES (100, 'new', 'row')")
            await conn.execute("DELETE FROM pct WHERE id = 100")

            async def synced() -> bool:
                rows = {s.target: s for s in await status.collect(conn)}
                done = all(s.embedded == s.rows == 3 for s in rows.values())
                return done and await queue_empty(conn)

            await wait_for(synced, 30)
    stored = await _vectors(conn, "pct")
    np.testing.assert_allclose(stored[2], expected("pct title 2 100% words of 2", 64), atol=1e-6)
    async with AsyncClient(
        db_url, settings, provider_factory=lambda _: LocalHashProvider()
    ) as client:
        hits = await client.search("pct", "100% title 2", k=2, hybrid=True)
        assert hits[0].pk == {"id": 2}


async def test_a_broken_definition_pauses_its_target_never_the_daemon(
    conn: AsyncConn, db_url: str
) -> None:
    """A template edited in the catalog into something unusable (it was checked when added):
    at start-up, on a target notification and in a re-embedding job, that target pauses with
    the reason; the daemon runs on and the healthy target keeps embedding."""
    await text_targets(conn, names=("early", "late", "jobbed", "healthy"), rows=3)
    await conn.execute("UPDATE syncsvc.targets SET template = '{title' WHERE name = 'early'")
    settings = fast_settings()
    async with running_daemon(db_url, settings) as daemon:
        # Start-up: the sweep met the broken template.
        assert "template of target early is invalid" in (await _paused_reason(conn, "early") or "")
        # The target-notification handler.
        await conn.execute("UPDATE syncsvc.targets SET template = '{body}}' WHERE name = 'late'")
        await conn.execute(
            "SELECT pg_notify('syncsvc_targets', id::text) FROM syncsvc.targets WHERE name = 'late'"
        )

        async def late_paused() -> bool:
            return await _paused_reason(conn, "late") is not None

        await wait_for(late_paused, 30)
        # A re-embedding job of a target whose template broke since.
        await jobs.request_reembed(conn, settings, "jobbed", model="local-hash", dimensions=128)
        await conn.execute("UPDATE syncsvc.targets SET template = '{' WHERE name = 'jobbed'")

        async def jobbed_paused() -> bool:
            return await _paused_reason(conn, "jobbed") is not None

        await wait_for(jobbed_paused, 30)
        # The healthy neighbour still embeds live edits; the daemon never stopped.
        await conn.execute("INSERT INTO healthy VALUES (4, 'fresh', 'edit')")

        async def healthy_synced() -> bool:
            return len(await _vectors(conn, "healthy")) == 4

        await wait_for(healthy_synced, 30)
        assert not daemon.stop_event.is_set()
    for name in ("late", "jobbed"):
        assert "is invalid" in (await _paused_reason(conn, name) or ""), name
    assert await _paused_reason(conn, "healthy") is None


async def test_quoted_names_and_text_read_back_exactly(conn: AsyncConn) -> None:
    """``quoting.ident`` / ``literal`` / ``type_name`` mean to PostgreSQL exactly what was
    given, in a statement that also has parameters (where a bare % would be a placeholder)."""
    rng = random.Random(7)
    values = ["100% off", "$$", "a$fn$b", "\\x25", "'%s'", '"%(x)s"', "é%漢🙂", "%", "$1"]
    values += [_draw(rng, 6) for _ in range(30)]
    for value in values:
        cur = await conn.execute(
            sql.SQL("SELECT {} AS v, {} AS a, %(p)s AS p").format(
                quoting.literal(value), quoting.literal([value, "x"])
            ),
            {"p": "param"},
        )
        row = await cur.fetchone()
        assert row == {"v": value, "a": [value, "x"], "p": "param"}, value
        name = value[:60]
        await conn.execute(sql.SQL("CREATE DOMAIN {} AS int").format(ident("public", name)))
        formatted = await scalar(
            conn, "SELECT format_type(oid, NULL) FROM pg_type WHERE typname = %s", (name,)
        )
        cur = await conn.execute(
            sql.SQL("SELECT 1::{} AS one, %(p)s AS p").format(quoting.type_name(formatted)),
            {"p": "param"},
        )
        assert await cur.fetchone() == {"one": 1, "p": "param"}, value
        await conn.execute(sql.SQL("DROP DOMAIN {}").format(ident(name)))
