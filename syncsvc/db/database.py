"""Connections: one place that opens them, checks pgvector, and registers its types."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

from syncsvc.core.errors import ConfigurationError
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles

logger = logging.getLogger(__name__)

MIN_SERVER_VERSION = 150000
MIN_PGVECTOR = (0, 7, 0)

PGVECTOR_MISSING = (
    "pgvector is not available on this PostgreSQL server ({detail}).\n"
    "syncsvc needs pgvector >= 0.7. Install it on the database server "
    "(Debian/Ubuntu: 'apt install postgresql-{major}-pgvector'; others: "
    "https://github.com/pgvector/pgvector#installation), then have a user allowed to do so run "
    "'CREATE EXTENSION vector;' in this database. Or leave SYNCSVC_DATABASE_URL unset to use "
    "the embedded PostgreSQL, which ships with pgvector."
)


def resolve_url(settings: Settings, *, announce: bool = True) -> str:
    """The database to use: configured URL, libpq variables, or the embedded server."""
    if settings.database_url:
        return settings.database_url
    if settings.libpq_configured():
        return ""  # an empty conninfo makes libpq read the PG* variables
    from syncsvc.db import embedded

    if announce:
        logger.warning(
            "no database configured (SYNCSVC_DATABASE_URL); using the embedded PostgreSQL in %s",
            settings.state_dir,
        )
    return embedded.start(settings.state_dir)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


async def ensure_pgvector(conn: AsyncConn) -> str:
    """Create pgvector if allowed and missing; fail with a clear, actionable message.

    Returns the pgvector version.
    """
    server_version = conn.info.server_version
    if server_version < MIN_SERVER_VERSION:
        raise ConfigurationError(
            f"PostgreSQL {server_version // 10000} is too old: syncsvc needs PostgreSQL >= 15."
        )
    major = server_version // 10000
    query = sqlfiles.query("ops", "vector_version")
    row = await (await conn.execute(query)).fetchone()
    if row is None:
        cur = await conn.execute(sqlfiles.query("ops", "vector_available"))
        if await cur.fetchone() is None:
            raise ConfigurationError(
                PGVECTOR_MISSING.format(detail="the extension is not installed", major=major)
            )
        try:
            async with conn.transaction():
                await conn.execute(sqlfiles.query("ops", "create_vector_extension"))
        except psycopg.errors.InsufficientPrivilege as exc:
            detail = f"installed, but not created in this database and you may not: {exc}"
            raise ConfigurationError(PGVECTOR_MISSING.format(detail=detail, major=major)) from exc
        row = await (await conn.execute(query)).fetchone()
        assert row is not None
    version = str(row["extversion"])
    if _version_tuple(version) < MIN_PGVECTOR:
        raise ConfigurationError(
            f"pgvector {version} is too old: syncsvc needs pgvector >= 0.7 "
            "(run 'ALTER EXTENSION vector UPDATE;' after upgrading the package)."
        )
    return version


async def ensure_schema(conn: AsyncConn) -> None:
    """Fail clearly unless syncsvc's schema is there and this role may use it."""
    cur = await conn.execute(sqlfiles.query("ops", "schema_state"))
    row = await cur.fetchone()
    assert row is not None
    if not row["schema"] or not row["migrated"]:
        raise ConfigurationError(
            "this database has no syncsvc schema yet: run 'syncsvc migrate' as the role that "
            "will own it"
        )
    if not row["usage"]:
        raise ConfigurationError(
            f"role {conn.info.user} may not use schema syncsvc: run syncsvc as the role that "
            "owns it, or give this role search rights with 'syncsvc grant search ROLE'"
        )


async def aconnect(url: str, *, check: bool = True) -> AsyncConn:
    """An async connection (autocommit, dict rows) with pgvector checked and registered."""
    try:
        conn = await psycopg.AsyncConnection.connect(url, autocommit=True, row_factory=dict_row)
    except psycopg.OperationalError as exc:
        raise ConfigurationError(f"cannot connect to PostgreSQL: {exc}".strip()) from exc
    try:
        if check:
            await ensure_pgvector(conn)
        await _register_vector(conn)
    except BaseException:
        await conn.close()
        raise
    return conn


async def _register_vector(conn: psycopg.AsyncConnection[Any]) -> None:
    # pgvector imports numpy: loaded with the first connection, not with the CLI.
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    await _register_vector(conn)


def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, application_name: str | None = None
) -> AsyncConnectionPool[AsyncConn]:
    """An async pool whose connections all know the pgvector types. Open it with ``await``."""
    kwargs: dict[str, Any] = {"autocommit": True, "row_factory": dict_row}
    if application_name:
        kwargs["application_name"] = application_name
    from psycopg_pool import AsyncConnectionPool  # the CLI's start needs no pool

    return AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        configure=_configure,
        kwargs=kwargs,
        name="syncsvc",
    )
