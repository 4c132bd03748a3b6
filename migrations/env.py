"""Alembic environment: runs syncsvc's migrations on the configured database.

The version table lives in the ``syncsvc`` schema so syncsvc needs no rights on ``public``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

SCHEMA = "syncsvc"
MIGRATION_LOCK = 7368297721
config = context.config
# A migration that recreates a table or view drops its grants: give every recorded search role
# its rights again (the function exists from revision 0007 on; a downgrade may remove it).
REAPPLY_GRANTS = """DO $$ BEGIN
    IF to_regprocedure('syncsvc.apply_search_grants(integer)') IS NOT NULL THEN
        PERFORM syncsvc.apply_search_grants();
    END IF;
END $$"""


def lock_functions_sql() -> str:
    """PUBLIC may execute exactly the allow-listed functions of schema syncsvc (the search
    functions readers call), whatever a migration created or recreated (from revision 0016 on,
    which brought row-level security to query_requests)."""
    from syncsvc.db.privileges import PUBLIC_FUNCTIONS

    allowed = ", ".join(f"'{f}'" for f in PUBLIC_FUNCTIONS)
    return f"""DO $$
DECLARE
    f regprocedure;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polname = 'own_requests'
                   AND p.polrelid = to_regclass('syncsvc.query_requests')) THEN
        RETURN;
    END IF;
    FOR f IN SELECT p.oid FROM pg_proc p WHERE p.pronamespace = 'syncsvc'::regnamespace LOOP
        IF f IN (SELECT to_regprocedure(a) FROM unnest(ARRAY[{allowed}]) a) THEN
            EXECUTE format('GRANT EXECUTE ON ROUTINE %s TO PUBLIC', f);
        ELSE
            EXECUTE format('REVOKE EXECUTE ON ROUTINE %s FROM PUBLIC', f);
        END IF;
    END LOOP;
END $$"""


def definitions_due(online: bool) -> bool:
    """Whether this run leaves the schema at the head, where syncsvc/db/definitions.py's files
    describe it (an upgrade or downgrade to an older revision keeps that revision's own)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(config)
    if online:
        reached: list[str] = list(context.get_context().get_current_heads())
    else:
        # ``migrate --sql``: where the requested range ends ("0012:heads" -> "heads").
        destination = context.get_revision_argument()
        names = [destination] if isinstance(destination, str) else list(destination or ())
        reached = [
            r.revision
            for n in names
            for r in script.get_revisions(str(n).rpartition(":")[2])
            if r is not None
        ]
    applied: set[str] = set()
    pending = list(reached)
    while pending:  # every revision applied: the ancestors and dependencies of those reached
        revision = script.get_revision(pending.pop())
        if revision is None or revision.revision in applied:
            continue
        applied.add(revision.revision)
        for parent in (revision.down_revision, revision.dependencies):
            pending.extend([parent] if isinstance(parent, str) else list(parent or ()))
    return set(script.get_heads()) <= applied


def apply_definitions(online: bool) -> None:
    """Functions, procedures, views and triggers: defined once, in sql/schema/*.sql."""
    if definitions_due(online):
        from syncsvc.db.definitions import definitions_sql

        context.execute(definitions_sql())


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from syncsvc.core.settings import Settings
        from syncsvc.db.database import resolve_url

        url = resolve_url(Settings())
    return sqlalchemy_url(url)


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url or "postgresql+psycopg://"


def run_offline() -> None:
    context.configure(
        url="postgresql+psycopg://",
        literal_binds=True,
        version_table_schema=SCHEMA,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        context.run_migrations()
        apply_definitions(online=False)
        context.execute(REAPPLY_GRANTS)
        context.execute(lock_functions_sql())


def run_online() -> None:
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Several daemons starting together each run "upgrade": one at a time does it.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK})
        connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
        connection.commit()
        context.configure(connection=connection, version_table_schema=SCHEMA)
        with context.begin_transaction():
            context.run_migrations()
            apply_definitions(online=True)
            connection.execute(text(REAPPLY_GRANTS))
            connection.execute(text(lock_functions_sql()))
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK})
        connection.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
