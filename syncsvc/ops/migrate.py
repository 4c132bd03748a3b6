"""Schema migrations through Alembic, callable from the CLI and tests.

Feature areas (search, jobs, operations) add their own revisions branching from the initial
one, so ``upgrade`` targets all heads.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stdout
from typing import TYPE_CHECKING, Any

from syncsvc.core.resources import migrations_dir

if TYPE_CHECKING:
    from alembic.config import Config

    from syncsvc.core.settings import Settings


def _config(url: str) -> Config:
    # Alembic (and SQLAlchemy under it) is imported only when a migration really runs: it
    # costs half a second of start-up for every other command.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.set_main_option("path_separator", "os")
    if url:
        # Alembic's ConfigParser treats % as interpolation.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "heads", settings: Settings | None = None) -> None:
    """Bring the schema to ``revision`` (idempotent); first prove pgvector is there, so a
    server without it fails with the one message that says how to install it. Then publish
    what the providers of ``settings`` offer, for SQL callers' validation, and rebuild the
    targets' capture functions from this version's template."""
    from alembic import command

    _run(_check(url))
    command.upgrade(_config(url), revision)
    if revision == "heads":
        _run(_publish(url, settings))


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(coro)
        return
    # Called from code that runs an event loop (the demo): check on a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, coro).result()


async def _publish(url: str, settings: Settings | None) -> None:
    from syncsvc.capture.slots import check_existing
    from syncsvc.capture.targets import refresh_capture
    from syncsvc.core.settings import Settings
    from syncsvc.db.database import aconnect
    from syncsvc.providers.registry import publish_models

    conn = await aconnect(url)
    try:
        await publish_models(conn, settings or Settings())
        await refresh_capture(conn)
        await check_existing(conn)
    finally:
        await conn.close()


async def _check(url: str) -> None:
    from syncsvc.db.database import aconnect

    conn = await aconnect(url)
    await conn.close()


def current(url: str) -> list[str]:
    """The revisions the database is at (one per head)."""
    import psycopg

    from syncsvc.db import sqlfiles

    with psycopg.connect(url) as conn:
        rows = conn.execute(sqlfiles.query("ops", "alembic_revisions")).fetchall()
    return sorted(str(r[0]) for r in rows)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    command.downgrade(_config(url), revision)


def upgrade_sql(revision: str = "heads") -> str:
    """The DDL ``upgrade`` would run, for DBAs who apply it themselves."""
    from alembic import command

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        command.upgrade(_config(""), revision, sql=True)
    return buffer.getvalue()


def pending(url: str) -> list[str]:
    """The revisions ``upgrade`` would apply to this database, newest first."""
    import psycopg
    from alembic.script import ScriptDirectory

    try:
        found = tuple(current(url))
    except psycopg.errors.UndefinedTable:
        found = ()
    script = ScriptDirectory.from_config(_config(""))
    return [r.revision for r in script.iterate_revisions("heads", found) if r is not None]


def require_current(url: str) -> None:
    """Fail in one line unless the schema is exactly what this version needs: for daemons that
    must not migrate themselves (replicas behind a migration Job)."""
    from syncsvc.core.errors import ConfigurationError

    missing = pending(url)
    if missing:
        raise ConfigurationError(
            f"the syncsvc schema is {len(missing)} revision(s) behind this version (up to "
            f"{missing[0]}): run 'syncsvc migrate' (the migration Job) first"
        )
