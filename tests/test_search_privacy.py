"""Many readers, many targets: searches are private, reader spend is bounded, and no function of
schema syncsvc is executable by PUBLIC beyond what readers call (issue 22, items 3, 4, 6).

Two targets (``docs``, ``notes``) embed through the simulator over real HTTP; two reader roles
(``app_reader`` from the fixtures, ``app_reader2`` created here as a DBA would) search them from
psql (``CALL syncsvc.embed_query`` + ``syncsvc.search``) while a daemon answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest

from syncsvc.api.client import AsyncClient
from syncsvc.capture import targets
from syncsvc.core.settings import SearchSettings, Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import privileges
from syncsvc.observe import metrics
from syncsvc.ops import migrate
from syncsvc.providers.registry import build_provider
from syncsvc.search import queries
from syncsvc.simulator import SimulatorThread
from tests.conftest import READER, WRITER, Deployment, role_url
from tests.helpers import fast_settings, queue_empty, running_daemon, scalar, wait_for
from tests.simulator_fixtures import simulator_settings
from tests.test_cli import syncsvc

READER2 = "app_reader2"
DIMS = 64
ROOT = Path(__file__).resolve().parents[1]


def _settings(sim: SimulatorThread, **search: Any) -> Settings:
    return Settings(
        worker=fast_settings().worker,
        providers=simulator_settings(sim).providers,
        search=SearchSettings(**search),
    )


def _second_reader(deployment: Deployment) -> str:
    """``app_reader2``, made as the DBA makes roles; SELECT on the source tables, like
    ``app_reader`` has."""
    # The cluster (and so its roles) is shared by the session's tests.
    with (
        psycopg.connect(deployment.admin, autocommit=True) as admin,
        contextlib.suppress(psycopg.errors.DuplicateObject),
    ):
        admin.execute(
            f"CREATE ROLE {READER2} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
        )
    with psycopg.connect(deployment.owner, autocommit=True) as owner:
        owner.execute(f"GRANT SELECT ON docs, notes TO {READER2}")
    return role_url(deployment.admin, READER2)


async def _targets(conn: AsyncConn, settings: Settings) -> None:
    for name in ("docs", "notes"):
        await conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, title text, body text)")
        await conn.execute(
            f"INSERT INTO {name} SELECT i, '{name} title ' || i, 'words of ' || i "
            "FROM generate_series(1, 10) i"
        )
        spec = targets.TargetSpec(
            name=name,
            table=name,
            columns=("title", "body"),
            model="text-embedding-v4",
            dimensions=DIMS,
            provider="sim",
        )
        await targets.add_target(conn, settings, spec)


def _embed_and_search(url: str, target: str, text: str) -> list[int]:
    """What a psql user runs: embed the text, then search by it."""
    with psycopg.connect(url, autocommit=True) as psql:
        psql.execute("CALL syncsvc.embed_query(%s, %s)", (target, text))
        rows = psql.execute(
            "SELECT (pk->>'id')::int FROM syncsvc.search(%s, %s, 3)", (target, text)
        ).fetchall()
    return [r[0] for r in rows]


def _search(url: str, target: str, text: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as psql:
        rows = psql.execute(
            "SELECT (pk->>'id')::int FROM syncsvc.search(%s, %s, 3)", (target, text)
        ).fetchall()
    return [r[0] for r in rows]


def _rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as psql:
        return psql.execute(query, params).fetchall()


def _execute(url: str, query: str, params: Any = None) -> int:
    with psycopg.connect(url, autocommit=True) as psql:
        return psql.execute(query, params).rowcount


async def _ready(conn: AsyncConn) -> bool:
    embedded = await scalar(
        conn,
        "SELECT (SELECT count(*) FROM syncsvc.docs_embeddings) "
        "+ (SELECT count(*) FROM syncsvc.notes_embeddings)",
    )
    return embedded == 20 and await queue_empty(conn)


def _sample(role: str, outcome: str) -> float:
    value = metrics.REGISTRY.get_sample_value(
        "syncsvc_query_embeddings_total", {"role": role, "outcome": outcome}
    )
    return value or 0.0


async def test_readers_see_and_change_only_their_own_searches(
    conn: AsyncConn, deployment: Deployment, simulator: SimulatorThread
) -> None:
    # The searches below find a row by its words: the lexical form ranks by shared words alone.
    simulator.configure(vectors="lexical")
    settings = _settings(simulator)
    await _targets(conn, settings)
    reader2 = _second_reader(deployment)
    await privileges.grant_search(conn, READER, "docs")
    await privileges.grant_search(conn, READER2)  # every target
    reader = deployment.reader
    async with running_daemon(deployment.owner, settings, build_provider("sim", settings)):
        await wait_for(lambda: _ready(conn))
        mine = await asyncio.to_thread(_embed_and_search, reader, "docs", "docs title 3")
        theirs = await asyncio.to_thread(_embed_and_search, reader2, "notes", "salary of bob")
        owners = await asyncio.to_thread(
            _embed_and_search, deployment.owner, "notes", "the owner's secret"
        )
        assert mine[0] == 3 and len(theirs) == 3 and len(owners) == 3

        # A reader sees its own request only, and no text at all once it was answered.
        seen = await asyncio.to_thread(_rows, reader, "SELECT query FROM syncsvc.query_requests")
        assert seen == [(None,)]
        # It cannot fail, re-file or delete anybody else's request.
        changed = await asyncio.to_thread(
            _execute, reader, "UPDATE syncsvc.query_requests SET state = 'failed'"
        )
        assert changed == 1  # its own
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await asyncio.to_thread(_execute, reader, "DELETE FROM syncsvc.query_requests")
        # Nor give its own answered request another text (its key is the text's digest).
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="cannot change"):
            await asyncio.to_thread(
                _execute, reader, "UPDATE syncsvc.query_requests SET query = 'salary of bob'"
            )
        # ... so the other reader's search is untouched.
        assert await asyncio.to_thread(_search, reader2, "notes", "salary of bob") == theirs
        # Another role's query is not the reader's to use: it must file its own.
        with pytest.raises(psycopg.errors.NoDataFound, match="not embedded yet"):
            await asyncio.to_thread(_search, reader2, "docs", "docs title 3")
        owned = await asyncio.to_thread(
            _rows, reader, "SELECT requested_by::text FROM syncsvc.query_requests"
        )
        assert owned == [(READER,)]
        # Its grants are its own business too.
        grants = await asyncio.to_thread(
            _rows, reader, "SELECT role_name::text FROM syncsvc.search_grants"
        )
        assert grants == [(READER,)]

        # No spend on a target the reader may not search: refused before anything is filed.
        calls = simulator.stats()["requests"]
        with pytest.raises(
            psycopg.errors.InsufficientPrivilege,
            match=f"role {READER} may not search target notes",
        ):
            await asyncio.to_thread(_embed_and_search, reader, "notes", "salary of alice")
        notes_generation = await scalar(
            conn, "SELECT generation_id FROM syncsvc.search_generation('notes')"
        )
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            await asyncio.to_thread(
                _execute,
                reader,
                "INSERT INTO syncsvc.query_requests (generation_id, query) VALUES (%s, 'x')",
                (notes_generation,),
            )
        # The other reader may, on both targets.
        assert (await asyncio.to_thread(_embed_and_search, reader2, "docs", "docs title 7"))[0] == 7
        assert simulator.stats()["requests"] == calls + 1

    # The owner reads every request, but no query text is kept once answered.
    cur = await conn.execute(
        "SELECT requested_by::text AS role, state, query FROM syncsvc.query_requests ORDER BY 1, 2"
    )
    rows = await cur.fetchall()
    assert {r["role"] for r in rows} == {READER, READER2, deployment_owner(deployment)}
    assert [r["query"] for r in rows] == [None] * len(rows)


def deployment_owner(deployment: Deployment) -> str:
    return deployment.owner.split("//", 1)[1].split("@", 1)[0]


async def test_query_text_retention_is_configurable(
    conn: AsyncConn, deployment: Deployment, simulator: SimulatorThread
) -> None:
    settings = _settings(simulator, query_text_retention_seconds=3600)
    await _targets(conn, settings)
    reader2 = _second_reader(deployment)
    await privileges.grant_search(conn, READER, "docs")
    await privileges.grant_search(conn, READER2, "notes")
    async with running_daemon(deployment.owner, settings, build_provider("sim", settings)) as d:
        await wait_for(lambda: _ready(conn))
        await asyncio.to_thread(_embed_and_search, deployment.reader, "docs", "kept a while")
        await asyncio.to_thread(_embed_and_search, reader2, "notes", "kept too")
        kept = await scalar(conn, "SELECT count(query) FROM syncsvc.query_requests")
        assert kept == 2
        # Within the retention the text stays; a zero retention erases answered texts.
        assert await queries.prune(d.pool, 3600) == 0
        assert await queries.prune(d.pool, 0) == 2
    assert await scalar(conn, "SELECT count(query) FROM syncsvc.query_requests") == 0
    # The hashes still find the cached vectors: searching needs no text and no API call.
    calls = simulator.stats()["requests"]
    assert (await asyncio.to_thread(_search, deployment.reader, "docs", "kept a while")) != []
    assert (await asyncio.to_thread(_search, reader2, "notes", "kept too")) != []
    assert simulator.stats()["requests"] == calls


async def test_reader_spend_is_bounded_per_role(
    conn: AsyncConn, deployment: Deployment, simulator: SimulatorThread
) -> None:
    settings = _settings(simulator)
    await _targets(conn, settings)
    reader2 = _second_reader(deployment)
    reader = deployment.reader
    # The CLI sets the limits of the runaway reader; the other keeps the defaults.
    out = await asyncio.to_thread(
        syncsvc,
        deployment.owner,
        "grant",
        "search",
        READER,
        "--target",
        "docs",
        "--max-queries-per-minute",
        "2",
        "--max-query-tokens",
        "8",
        "--json",
    )
    assert json.loads(out.stdout)["max_queries_per_minute"] == 2
    async with AsyncClient(deployment.owner, settings) as client:
        await client.grant_search(READER2)  # the defaults
        grants = {(g.role, g.target): g for g in await client.search_grants()}
    assert (
        grants[READER, "docs"].max_queries_per_minute,
        grants[READER, "docs"].max_query_tokens,
    ) == (2, 8)
    assert (
        grants[READER2, None].max_queries_per_minute,
        grants[READER2, None].max_query_tokens,
    ) == (
        privileges.DEFAULT_MAX_QUERIES_PER_MINUTE,
        privileges.DEFAULT_MAX_QUERY_TOKENS,
    )
    before = {
        (role, outcome): _sample(role, outcome)
        for role in (READER, READER2)
        for outcome in ("embedded", "cached", "refused")
    }
    async with running_daemon(deployment.owner, settings, build_provider("sim", settings)):
        await wait_for(lambda: _ready(conn))
        calls = simulator.stats()["requests"]
        # A text the other reader already had embedded is free, also for this reader.
        await asyncio.to_thread(_embed_and_search, reader2, "docs", "docs title 9")
        assert simulator.stats()["requests"] == calls + 1
        for text in ("docs title 1", "docs title 2", "docs title 9"):
            await asyncio.to_thread(_embed_and_search, reader, "docs", text)
        assert simulator.stats()["requests"] == calls + 3
        # The third distinct text would be billed: over the limit, refused, not sent.
        with pytest.raises(
            psycopg.errors.ConfigurationLimitExceeded,
            match=f"role {READER} has used its 2 query embeddings per minute",
        ):
            await asyncio.to_thread(_embed_and_search, reader, "docs", "docs title 4")
        # Repeating a query it has is free, over budget or not.
        assert (await asyncio.to_thread(_embed_and_search, reader, "docs", "docs title 1"))[0] == 1
        # An overlong query is refused before it costs anything.
        with pytest.raises(
            psycopg.errors.ConfigurationLimitExceeded, match="may embed at most 8 per query"
        ):
            await asyncio.to_thread(_embed_and_search, reader, "docs", "a long question " * 40)
        assert simulator.stats()["requests"] == calls + 3
        # The other reader's budget and targets are untouched.
        for target, text in (("docs", "docs title 5"), ("notes", "notes title 6"), ("notes", "x")):
            assert await asyncio.to_thread(_embed_and_search, reader2, target, text)
        assert simulator.stats()["requests"] == calls + 6

    def delta(role: str, outcome: str) -> float:
        return _sample(role, outcome) - before[role, outcome]

    # Per-role counters in /metrics.
    assert (delta(READER, "embedded"), delta(READER, "cached"), delta(READER, "refused")) == (
        2,
        1,
        2,
    )
    assert (delta(READER2, "embedded"), delta(READER2, "refused")) == (4, 0)
    exposition = metrics.exposition().decode()
    assert re.search(
        rf'syncsvc_query_embeddings_total\{{outcome="refused",role="{READER}"\}}', exposition
    )


async def test_only_reader_functions_are_executable_by_public(
    conn: AsyncConn, deployment: Deployment, simulator: SimulatorThread
) -> None:
    settings = _settings(simulator)
    await _targets(conn, settings)
    _second_reader(deployment)
    await privileges.grant_search(conn, READER, "docs")
    await privileges.grant_search(conn, READER2, "notes")
    # Administration: nobody else may run it, whatever it would later fail on.
    for role in (READER, READER2, WRITER):
        for function in (
            "grant_search",
            "revoke_search",
            "apply_search_grants",
            "create_vector_table",
        ):
            allowed = await scalar(
                conn,
                "SELECT bool_or(has_function_privilege(%s, p.oid, 'EXECUTE')) FROM pg_proc p "
                "WHERE p.pronamespace = 'syncsvc'::regnamespace AND p.proname = %s",
                (role, function),
            )
            assert allowed is False, (role, function)
    acls = await privileges.function_acls(conn)
    assert sorted(f for f, public in acls.items() if public) == sorted(privileges.PUBLIC_FUNCTIONS)
    with (
        psycopg.connect(deployment.reader, autocommit=True) as reader,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        reader.execute("SELECT syncsvc.grant_search(%s, 'notes')", (READER,))
    # A function a later migration adds (or recreates) is locked again by every migrate.
    await conn.execute("CREATE FUNCTION syncsvc.stray() RETURNS int LANGUAGE sql RETURN 1")
    assert (await privileges.function_acls(conn))["syncsvc.stray()"] is True
    await asyncio.to_thread(migrate.upgrade, deployment.owner)
    acls = await privileges.function_acls(conn)
    assert acls["syncsvc.stray()"] is False
    assert sorted(f for f, public in acls.items() if public) == sorted(privileges.PUBLIC_FUNCTIONS)
    # docs/sql.md lists exactly the allow-list.
    text = (ROOT / "docs" / "sql.md").read_text()
    section = text.split("### Executable by PUBLIC", 1)[1].split("\n#", 1)[0]
    listed = set(re.findall(r"`(syncsvc\.\w+)\(", section))
    assert listed == {f.split("(", 1)[0] for f in privileges.PUBLIC_FUNCTIONS}


async def test_group_grants_and_dropped_roles(
    conn: AsyncConn, deployment: Deployment, simulator: SimulatorThread
) -> None:
    """A grant to a group role covers its members (each still private, with its own budget);
    a request whose role was dropped since is refused without disturbing anybody else's."""
    settings = _settings(simulator)
    await _targets(conn, settings)
    reader2 = _second_reader(deployment)
    suffix = deployment.admin.rsplit("/", 1)[1].lower()
    group, member, gone = f"grp_{suffix}", f"mem_{suffix}", f"gone_{suffix}"
    with psycopg.connect(deployment.admin, autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {group} NOLOGIN")
        admin.execute(f"CREATE ROLE {member} LOGIN IN ROLE {group}")
        admin.execute(f"CREATE ROLE {gone} LOGIN")
    await conn.execute(f"GRANT SELECT ON docs, notes TO {group}, {gone}")
    await privileges.grant_search(conn, group, "docs", max_queries_per_minute=1)
    await privileges.grant_search(conn, gone, "docs")
    await privileges.grant_search(conn, READER2)
    member_url, gone_url = role_url(deployment.admin, member), role_url(deployment.admin, gone)
    # Filed while no daemon runs; then the DBA drops the role.
    with (
        psycopg.connect(gone_url, autocommit=True) as psql,
        pytest.raises(psycopg.errors.QueryCanceled),
    ):
        psql.execute("CALL syncsvc.embed_query('docs', 'left behind', 0.05)")
    with psycopg.connect(deployment.admin, autocommit=True) as admin:
        admin.execute(f"DROP OWNED BY {gone}")
        admin.execute(f"DROP ROLE {gone}")
    try:
        async with running_daemon(deployment.owner, settings, build_provider("sim", settings)):
            await wait_for(lambda: _ready(conn))
            assert await asyncio.to_thread(_embed_and_search, member_url, "docs", "docs 2")
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not search"):
                await asyncio.to_thread(_embed_and_search, member_url, "notes", "notes 2")
            with pytest.raises(psycopg.errors.ConfigurationLimitExceeded, match="1 query"):
                await asyncio.to_thread(_embed_and_search, member_url, "docs", "docs 3")
            assert await asyncio.to_thread(_embed_and_search, reader2, "notes", "notes 4")
            await wait_for(
                lambda: scalar(
                    conn,
                    "SELECT state = 'refused' FROM syncsvc.query_requests WHERE requested_by = %s",
                    (gone,),
                )
            )
        seen = await asyncio.to_thread(
            _rows, member_url, "SELECT requested_by::text FROM syncsvc.query_requests"
        )
        assert sorted(seen) == [(member,), (member,)]
    finally:
        with psycopg.connect(deployment.admin, autocommit=True) as admin:
            for role in (member, group):
                admin.execute(f"DROP OWNED BY {role}")
                admin.execute(f"DROP ROLE {role}")


async def test_vectors_kept_at_target_remove_keep_no_readers_rights(
    conn: AsyncConn, deployment: Deployment, simulator: SimulatorThread
) -> None:
    """``target remove --keep-vectors``: the grant records go with the target, so the kept
    tables must not stay readable by the roles they named (nobody could revoke it later). The
    neighbour target's grants are untouched."""
    settings = _settings(simulator)
    await _targets(conn, settings)
    _second_reader(deployment)
    await privileges.grant_search(conn, READER, "docs")
    await privileges.grant_search(conn, READER2)  # every target

    async def readable(role: str, relation: str) -> bool:
        return bool(
            await scalar(conn, "SELECT has_table_privilege(%s, %s, 'SELECT')", (role, relation))
        )

    kept = ["syncsvc.docs_embeddings", "syncsvc.docs_g1"]
    for relation in kept:
        assert await readable(READER, relation) and await readable(READER2, relation)
    await targets.remove_target(conn, "docs", keep_vectors=True)
    for relation in kept:
        assert await scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (relation,))
        assert not await readable(READER, relation)
        assert not await readable(READER2, relation)
    assert await readable(READER2, "syncsvc.notes_embeddings")
    assert await readable(READER2, "syncsvc.notes_g2")
