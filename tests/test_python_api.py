"""``syncsvc.Client`` alone drives a target's whole life, and the CLI, SQL and Python paths
leave identical catalog state for the same request."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import syncsvc
from syncsvc import Client, JobState, Target
from tests.conftest import Cluster, Deployment
from tests.helpers import fast_settings, running_daemon, spawn_daemon

DIMS = 64
TEMPLATE = "{title}\n{body}"


def make_docs(url: str, rows: int = 12) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
        c.execute(
            "INSERT INTO docs SELECT i, 'title ' || i, 'body ' || i FROM generate_series(1, %s) i",
            (rows,),
        )


def until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"condition not met within {timeout}s")


@pytest.fixture
def daemon(deployment: Deployment) -> Iterator[subprocess.Popen[bytes]]:
    process = spawn_daemon(deployment.owner, poll_interval_seconds=0.2)
    yield process
    process.terminate()
    process.wait(30)


def test_the_python_client_alone_runs_a_target_lifecycle(
    deployment: Deployment, daemon: subprocess.Popen[bytes]
) -> None:
    make_docs(deployment.owner)
    make_notes = "CREATE TABLE notes (id int PRIMARY KEY, title text, body text)"
    with psycopg.connect(deployment.owner, autocommit=True) as c:
        c.execute(make_notes)
        c.execute("INSERT INTO notes VALUES (1, 'a note', 'beside')")
    with Client(deployment.owner, fast_settings()) as client:
        target = client.add_target(
            "docs", "docs", ["title", "body"], provider="local-hash", model="local-hash",
            dimensions=DIMS, template=TEMPLATE,
        )  # fmt: skip
        assert isinstance(target, Target) and target.active is not None
        client.add_target(
            "notes", "notes", ["title", "body"], provider="local-hash", model="local-hash",
            dimensions=DIMS,
        )  # fmt: skip

        def settled(name: str, rows: int) -> bool:
            found = {s.target: s for s in client.status()}[name]
            return found.embedded == rows and found.pending == 0 and found.in_flight == 0

        until(lambda: settled("docs", 12) and settled("notes", 1))
        hits = client.search("docs", "title 4\nbody 4", k=3)
        assert hits[0].pk == {"id": 4} and hits[0].row["title"] == "title 4"
        assert hits[0].distance == pytest.approx(0.0, abs=1e-6)

        client.pause_target("docs", "maintenance")
        assert {s.target: s for s in client.status()}["docs"].paused_reason == "maintenance"
        assert client.resume_target("docs") == "maintenance"

        estimate = client.estimate_reembed("docs", "local-hash", 128)
        assert (estimate.rows, estimate.dimensions, estimate.cost) == (12, 128, 0.0)
        job = client.reembed("docs", "local-hash", 128)
        assert [j.id for j in client.jobs(open_only=True)] == [job.id]
        until(lambda: client.job(job.id).state is JobState.COMPLETED)
        generations = {g.generation.id: g for g in client.generations("docs")}
        assert generations[job.generation_id].coverage.current == 12
        promotion = client.promote("docs", job.generation_id)
        assert promotion.previous is not None and promotion.previous.id == target.active.id
        assert client.target("docs").active == promotion.generation
        assert client.search("docs", "title 7\nbody 7", k=1)[0].pk == {"id": 7}

        assert client.failed() == [] and client.retry_failed("docs") == 0
        removed = client.remove_target("docs")
        assert removed.name == "docs"
        assert [t.name for t in client.targets()] == ["notes"]
        notes = client.status()[0]
        assert (notes.target, notes.embedded, notes.failed) == ("notes", 1, 0)
    public = {n for n in dir(syncsvc) if not n.startswith("_")}
    assert public == set(syncsvc.__all__)
    assert {"Client", "AsyncClient", "Target", "TargetStatus", "Job", "Promotion"} <= public


# --- one implementation: the same request through each door leaves the same catalog -----

CATALOG = {
    "targets": "SELECT name, source_schema, source_table, pk_columns, pk_types, columns, "
    "template, metric, paused_reason, embed_labels FROM syncsvc.targets ORDER BY id",
    "generations": "SELECT id, target_id, key, provider, space, model, dimensions, options, "
    "state, table_name FROM syncsvc.generations ORDER BY id",
    "jobs": "SELECT id, target_id, generation_id, auto_promote, max_queued FROM syncsvc.jobs",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
    "WHERE tgrelid = 'docs'::regclass AND NOT tgisinternal ORDER BY 1",
    "functions": "SELECT proname, pg_get_functiondef(p.oid), proacl::text, prosecdef "
    "FROM pg_proc p WHERE pronamespace = 'syncsvc'::regnamespace "
    "AND proname LIKE 'capture%' ORDER BY 1",
    "tables": "SELECT table_name, column_name, data_type, udt_name, is_nullable "
    "FROM information_schema.columns WHERE table_schema = 'syncsvc' "
    "AND table_name LIKE 'docs%' ORDER BY 1, ordinal_position",
    "acl": "SELECT relname, relacl::text FROM pg_class "
    "WHERE relnamespace = 'syncsvc'::regnamespace AND relname LIKE 'docs%' ORDER BY 1",
    "view": "SELECT pg_get_viewdef('syncsvc.docs_embeddings'::regclass)",
}


def catalog_state(url: str) -> dict[str, list[tuple[Any, ...]]]:
    with psycopg.connect(url) as c:
        return {name: c.execute(query).fetchall() for name, query in CATALOG.items()}


def via_cli(url: str) -> None:
    env = {**os.environ, "SYNCSVC_DATABASE_URL": url}
    for args in (
        ["target", "add", "docs", "--table", "docs", "--columns", "title,body",
         "--provider", "local-hash", "--model", "local-hash", "--dimensions", str(DIMS),
         "--template", "{title}\\n{body}"],
        ["reembed", "docs", "--model", "local-hash", "--dimensions", "128"],
    ):  # fmt: skip
        done = subprocess.run(
            [sys.executable, "-m", "syncsvc", *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr


def via_python(url: str) -> None:
    with Client(url, fast_settings()) as client:
        client.add_target(
            "docs", "docs", ["title", "body"], provider="local-hash", model="local-hash",
            dimensions=DIMS, template=TEMPLATE,
        )  # fmt: skip
        client.reembed("docs", "local-hash", 128)


async def via_sql(url: str) -> None:
    def add() -> None:
        with psycopg.connect(url, autocommit=True) as c:
            row = c.execute(
                "SELECT syncsvc.add_target('docs', 'docs', '{title,body}', 'local-hash', %s, "
                "'local-hash', %s)",
                (DIMS, TEMPLATE),
            ).fetchone()
            assert row is not None
            c.execute("CALL syncsvc.wait_request(%s, 20)", (row[0],))

    # A daemon carries the request out; it stops before the re-embed so nothing runs the job.
    async with running_daemon(url):
        await asyncio.to_thread(add)
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("SELECT syncsvc.request_reembed('docs', 'local-hash', 128)")


async def test_cli_sql_and_python_leave_identical_catalog_state(cluster: Cluster) -> None:
    made = [cluster.deployment(f"same_{os.getpid()}_{door}") for door in ("cli", "sql", "py")]
    try:
        for deployment in made:
            make_docs(deployment.owner)
        await asyncio.to_thread(via_cli, made[0].owner)
        await via_sql(made[1].owner)
        await asyncio.to_thread(via_python, made[2].owner)
        states = [catalog_state(d.owner) for d in made]
        assert len(states[0]["triggers"]) == 4 and len(states[0]["generations"]) == 2
        assert states[0]["targets"][0][6] == TEMPLATE
        for name in CATALOG:
            assert states[1][name] == states[0][name], f"SQL differs from the CLI in {name}"
            assert states[2][name] == states[0][name], f"Python differs from the CLI in {name}"
    finally:
        for deployment in made:
            cluster.drop(deployment)
