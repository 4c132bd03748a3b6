"""SQL functions, views and triggers are defined once (sql/schema/*.sql): a schema built fresh,
one upgraded revision by revision from 0001, and one upgraded from the previous release's head
(0012) end up with the same definitions, triggers and privileges."""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from syncsvc.core.resources import migrations_dir
from syncsvc.db import privileges
from syncsvc.db.database import aconnect
from syncsvc.db.definitions import source
from syncsvc.ops import migrate
from tests.conftest import READER, Cluster, Deployment
from tests.helpers import scalar, text_targets

PREVIOUS_RELEASE = "0012"
LAST_WITH_DEFINITIONS = "0016"
"""Revisions up to this one created functions and views themselves (history); later ones may
only drop or rename them: their definitions are in sql/schema, which would overwrite them."""
DEFINES = re.compile(r"\bCREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE|VIEW|TRIGGER)\b", re.I)


def revisions() -> list[str]:
    """Every revision, oldest first: what an operator upgrading at each release applied."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    walked = ScriptDirectory.from_config(config).walk_revisions("base", "heads")
    return sorted(r.revision for r in walked)


_names = itertools.count()

SNAPSHOT = {
    "function": """
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), p.proacl::text,
               p.proowner::regrole::text, obj_description(p.oid, 'pg_proc')
        FROM pg_proc p WHERE p.pronamespace = 'syncsvc'::regnamespace""",
    "relation": """
        SELECT c.relname::text, c.relkind::text, c.relacl::text, c.relowner::regrole::text,
               CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
               obj_description(c.oid, 'pg_class')
        FROM pg_class c WHERE c.relnamespace = 'syncsvc'::regnamespace
          AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')""",
    "trigger": """
        SELECT t.tgrelid::regclass::text || ' ' || t.tgname, pg_get_triggerdef(t.oid),
               t.tgenabled::text
        FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
        WHERE NOT t.tgisinternal
          AND c.relnamespace IN ('syncsvc'::regnamespace, 'public'::regnamespace)""",
    "policy": """
        SELECT p.polrelid::regclass::text || ' ' || p.polname, pg_get_expr(p.polqual, p.polrelid),
               pg_get_expr(p.polwithcheck, p.polrelid), p.polroles::regrole[]::text
        FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
        WHERE c.relnamespace = 'syncsvc'::regnamespace""",
}


def snapshot(url: str) -> dict[str, dict[str, tuple[Any, ...]]]:
    """What must not depend on the way the schema was built: every function's definition, ACL,
    owner and comment; every relation's ACL and view definition; triggers; policies."""
    with psycopg.connect(url) as conn:
        return {
            kind: {row[0]: tuple(row[1:]) for row in conn.execute(query).fetchall()}
            for kind, query in SNAPSHOT.items()
        }


def function_oids(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT p.oid::regprocedure::text, p.oid::int FROM pg_proc p "
            "WHERE p.pronamespace = 'syncsvc'::regnamespace"
        ).fetchall()
    return dict(rows)


def _empty(cluster: Cluster) -> Iterator[list[Deployment]]:
    made = [
        cluster.deployment(f"defs_{os.getpid()}_{next(_names)}", migrated=False) for _ in range(3)
    ]
    yield made
    for deployment in made:
        cluster.drop(deployment)


@pytest.fixture
def empty_databases(cluster: Cluster) -> Iterator[list[Deployment]]:
    """Three databases where the DBA only ran CREATE EXTENSION vector."""
    yield from _empty(cluster)


@pytest.fixture(params=[16, 18], ids=lambda v: f"pg{v}")
def versioned_databases(
    request: pytest.FixtureRequest, clusters: Callable[[int | None], Cluster]
) -> Iterator[list[Deployment]]:
    """The same, on each PostgreSQL major version the core path runs on."""
    yield from _empty(clusters(request.param))


def test_fresh_stepwise_and_previous_release_upgrades_define_the_same_schema(
    versioned_databases: list[Deployment],
) -> None:
    fresh, stepwise, previous = (d.owner for d in versioned_databases)
    migrate.upgrade(fresh)

    steps = revisions()
    assert steps[0] == "0001" and PREVIOUS_RELEASE in steps
    for revision in steps:
        migrate.upgrade(stepwise, revision)
        assert migrate.current(stepwise)[-1] == revision
    migrate.upgrade(stepwise)

    migrate.upgrade(previous, PREVIOUS_RELEASE)
    migrate.upgrade(previous)

    expected = snapshot(fresh)
    assert len(expected["function"]) >= 30 and len(expected["trigger"]) == 2
    assert snapshot(stepwise) == expected
    assert snapshot(previous) == expected


async def _targets_and_grant(url: str, *, at_head: bool = True) -> None:
    conn = await aconnect(url)
    try:
        await text_targets(conn, ("docs", "notes"), rows=3)
        if at_head:
            await privileges.grant_search(conn, READER, "docs")
        else:  # the grant of the revision before the head: no query limits yet
            await conn.execute("SELECT syncsvc.grant_search(%s, %s)", (READER, "docs"))
    finally:
        await conn.close()


async def test_targets_registered_midway_end_like_targets_registered_at_the_head(
    empty_databases: list[Deployment],
) -> None:
    """Targets (capture functions and triggers on the application's tables, vector tables,
    views, search grants) made by this version on the revision before the head keep their
    definitions and grants through the upgrade."""
    fresh, midway = (d.owner for d in empty_databases[:2])
    migrate.upgrade(fresh)
    await _targets_and_grant(fresh)
    before_head = revisions()[-2]
    migrate.upgrade(midway, before_head)
    await _targets_and_grant(midway, at_head=False)
    oids = function_oids(midway)
    migrate.upgrade(midway)

    expected = snapshot(fresh)
    assert any(key.startswith("docs ") for key in expected["trigger"])
    assert snapshot(midway) == expected
    kept = function_oids(midway)
    assert any("capture" in f for f in oids)
    assert {f: kept[f] for f in oids if "capture" in f or "truncate" in f} == {
        f: oids[f] for f in oids if "capture" in f or "truncate" in f
    }


def test_later_revisions_define_no_function_view_or_trigger() -> None:
    later = [
        path
        for path in sorted((migrations_dir() / "versions").glob("*.py"))
        if path.name[:4].isdigit() and path.name[:4] > LAST_WITH_DEFINITIONS
    ]
    for path in later:
        found = DEFINES.search(path.read_text(encoding="utf-8"))
        assert found is None, f"{path.name}: {found[0]}: define it in sql/schema/ instead"


def test_every_function_view_and_trigger_is_in_the_definition_files(db_url: str) -> None:
    text = source()
    with psycopg.connect(db_url) as conn:
        functions = conn.execute(
            "SELECT proname::text, prokind::text FROM pg_proc "
            "WHERE pronamespace = 'syncsvc'::regnamespace"
        ).fetchall()
        views = conn.execute(
            "SELECT relname::text FROM pg_class "
            "WHERE relnamespace = 'syncsvc'::regnamespace AND relkind = 'v'"
        ).fetchall()
        triggers = conn.execute(
            "SELECT t.tgname::text, t.tgrelid::regclass::text FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE c.relnamespace = 'syncsvc'::regnamespace AND NOT t.tgisinternal"
        ).fetchall()
    assert functions and views and triggers
    for name, kind in functions:
        routine = "PROCEDURE" if kind == "p" else "FUNCTION"
        found = re.findall(rf"CREATE OR REPLACE {routine} syncsvc\.{name}\(", text)
        assert len(found) == 1, name
    for (name,) in views:
        assert len(re.findall(rf"CREATE OR REPLACE VIEW syncsvc\.{name} AS", text)) == 1, name
    for name, table in triggers:
        found = re.findall(rf"CREATE OR REPLACE TRIGGER {name} .* ON {table} ", text)
        assert len(found) == 1, name


def test_migrate_restores_a_changed_definition_and_keeps_grants(
    empty_databases: list[Deployment],
) -> None:
    reference, changed = (d.owner for d in empty_databases[:2])
    migrate.upgrade(reference)
    migrate.upgrade(changed)
    with psycopg.connect(changed) as conn:
        conn.execute(
            "CREATE OR REPLACE FUNCTION syncsvc.text_digest(query text) RETURNS bytea "
            "LANGUAGE sql IMMUTABLE RETURN NULL::bytea"
        )
        conn.execute("CREATE OR REPLACE VIEW syncsvc.daemon_sessions AS SELECT 'x'::text AS tag")
    assert snapshot(changed) != snapshot(reference)
    migrate.upgrade(changed)
    assert snapshot(changed) == snapshot(reference)
    with psycopg.connect(changed) as conn:
        assert conn.execute("SELECT syncsvc.text_digest('a') IS NOT NULL").fetchone() == (True,)


async def test_migrate_again_keeps_targets_capture_and_grants(
    db_url: str, deployment: Deployment
) -> None:
    conn = await aconnect(db_url)
    try:
        await text_targets(conn, ("docs", "notes"), rows=2)
        await privileges.grant_search(conn, READER, "docs")
        await conn.execute("DELETE FROM syncsvc.inbox")
    finally:
        await conn.close()
    before, oids = snapshot(db_url), function_oids(db_url)
    assert any("docs" in key for key in before["trigger"])  # the application's capture

    migrate.upgrade(db_url)

    assert snapshot(db_url) == before
    assert function_oids(db_url) == oids  # installed triggers still call the same functions
    with psycopg.connect(deployment.writer) as app:
        app.execute("INSERT INTO docs VALUES (100, 'new title', 'new body')")
    conn = await aconnect(db_url)
    try:
        inbox = (
            "SELECT coalesce(jsonb_agg(p ORDER BY p), '[]') FROM syncsvc.inbox i "
            "JOIN syncsvc.targets t ON t.id = i.target_id, jsonb_array_elements(i.pks) p "
            "WHERE t.name = %s"
        )
        captured = await scalar(conn, inbox, ("docs",))
        neighbour = await scalar(conn, inbox, ("notes",))
        errors = await scalar(conn, "SELECT count(*) FROM syncsvc.capture_errors")
    finally:
        await conn.close()
    assert (captured, neighbour, errors) == ([[100]], [], 0)
    with psycopg.connect(deployment.reader) as reader:
        assert reader.execute("SELECT count(*) FROM syncsvc.docs_embeddings").fetchone() == (0,)


def test_migrate_again_waits_for_no_lock_a_running_daemon_holds(
    db_url: str, deployment: Deployment
) -> None:
    """Daemons read the views (the claim reads syncsvc.daemon_sessions) and write syncsvc's
    tables while another daemon starts and migrates: a migrate that changes nothing must not
    need a lock that conflicts with theirs (it would fail at lock_timeout instead of waiting)."""
    with psycopg.connect(db_url) as holder:
        views = holder.execute(
            "SELECT c.oid::regclass::text FROM pg_class c "
            "WHERE c.relnamespace = 'syncsvc'::regnamespace AND c.relkind = 'v'"
        ).fetchall()
        for (view,) in views:
            holder.execute(f"SELECT * FROM {view} LIMIT 0")
        holder.execute("LOCK TABLE syncsvc.targets, syncsvc.query_requests IN ROW EXCLUSIVE MODE")
        impatient = db_url + ("&" if "?" in db_url else "?") + "options=-c%20lock_timeout%3D3000"
        migrate.upgrade(impatient)
        held = holder.execute(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND granted"
        ).fetchone()
        assert held is not None and held[0] >= len(views) + 2


def test_offline_sql_ends_with_the_definitions() -> None:
    ddl = migrate.upgrade_sql()
    assert "CREATE OR REPLACE VIEW syncsvc.capture_drift AS" in ddl
    assert ddl.index("CREATE TABLE syncsvc.queue") < ddl.index(
        "CREATE OR REPLACE FUNCTION syncsvc.request_reembed("
    )
    assert "CREATE OR REPLACE VIEW syncsvc.capture_drift" not in migrate.upgrade_sql(
        PREVIOUS_RELEASE
    )
