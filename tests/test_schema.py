from __future__ import annotations

import psycopg

from syncsvc.ops import migrate


def _tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'syncsvc'"
        ).fetchall()
    return {r[0] for r in rows}


def test_upgrade_downgrade_upgrade(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    assert {"targets", "generations", "queue", "failures", "alembic_version"} <= _tables(
        empty_db_url
    )
    migrate.upgrade(empty_db_url)  # idempotent
    migrate.downgrade(empty_db_url, "base")
    assert _tables(empty_db_url) == {"alembic_version"}
    migrate.upgrade(empty_db_url)
    assert {"targets", "generations", "queue"} <= _tables(empty_db_url)


def test_offline_sql_contains_ddl() -> None:
    ddl = migrate.upgrade_sql()
    assert "CREATE TABLE syncsvc.queue" in ddl
    assert "CREATE FUNCTION syncsvc.content_hash" in ddl
