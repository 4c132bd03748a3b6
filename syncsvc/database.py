"""Connections: one place that opens them, checks pgvector, and registers its types."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from pgvector.psycopg import register_vector, register_vector_async
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from syncsvc.errors import ConfigurationError
from syncsvc.settings import Settings

logger = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000
MIN_PGVECTOR = (0, 7, 0)

PGVECTOR_MISSING = (
    "pgvector is not available on this PostgreSQL server ({detail}).\n"
    "syncsvc needs pgvector >= 0.7. Install it on the server (Debian/Ubuntu: "
    "'apt install postgresql-{major}-pgvector'; from source: "
    "https://github.com/pgvector/pgvector#installation), then run as a user allowed to "
    "create it: CREATE EXTENSION vector;  — or leave the database unset to use the embedded "
    "PostgreSQL, which ships with pgvector."
)

Row = dict[str, Any]


def resolve_url(settings: Settings, *, announce: bool = True) -> str:
    """The database to use: configured URL, libpq variables, or the embedded server."""
    if settings.database_url:
        return settings.database_url
    if settings.libpq_configured():
        return ""  # an empty conninfo makes libpq read PG* variables
    from syncsvc import embedded

    if announce:
        logger.warning(
            "no database configured (SYNCSVC_DATABASE_URL); using the embedded PostgreSQL in %s",
            settings.state_dir,
        )
    return embedded.start(settings.state_dir)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def ensure_pgvector(conn: psycopg.Connection[Any]) -> None:
    """Create pgvector if allowed and missing; fail with a clear, actionable message."""
    server_version = conn.info.server_version
    if server_version < MIN_SERVER_VERSION:
        raise ConfigurationError(
            f"PostgreSQL {server_version // 10000} is too old: syncsvc needs PostgreSQL >= 15."
        )
    major = server_version // 10000
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if row is None:
        available = conn.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
        if available is None:
            raise ConfigurationError(
                PGVECTOR_MISSING.format(detail="extension not installed", major=major)
            )
        try:
            with conn.transaction():
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConfigurationError(
                PGVECTOR_MISSING.format(
                    detail=f"installed but not created in this database: {exc}", major=major
                )
            ) from exc
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        assert row is not None
    version = str(row[0])
    if _version_tuple(version) < MIN_PGVECTOR:
        raise ConfigurationError(
            f"pgvector {version} is too old: syncsvc needs pgvector >= 0.7 "
            f"(ALTER EXTENSION vector UPDATE;)."
        )


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Row]:
    """A synchronous connection with pgvector types registered (for the CLI and migrations)."""
    conn = psycopg.connect(url, autocommit=autocommit, row_factory=dict_row)
    try:
        ensure_pgvector(conn)
        register_vector(conn)
    except BaseException:
        conn.close()
        raise
    return conn


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await register_vector_async(conn)


def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, kwargs: Mapping[str, Any] | None = None
) -> AsyncConnectionPool[psycopg.AsyncConnection[Row]]:
    """An async pool whose connections all know the pgvector types. Open it with ``await``."""
    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        configure=_configure,
        kwargs={"autocommit": True, "row_factory": dict_row, **(kwargs or {})},
        name="syncsvc",
    )
