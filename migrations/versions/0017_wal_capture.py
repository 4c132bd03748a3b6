"""Capture from the WAL, per target.

* ``syncsvc.targets.capture``: ``triggers`` (statement triggers on the application's table,
  the default) or ``wal`` (no trigger: the table is in syncsvc's publication and the daemon
  reads the database's logical replication slot, see ``capture/wal``).
* ``syncsvc.add_target`` takes ``capture``: the old signature is dropped here, the new one is
  defined in ``sql/schema/30_admin.sql``.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

OLD_ADD_TARGET = (
    "syncsvc.add_target(text, regclass, text[], text, integer, text, text, text[], text, "
    "boolean, jsonb)"
)
NEW_ADD_TARGET = (
    "syncsvc.add_target(text, regclass, text[], text, integer, text, text, text[], text, "
    "boolean, jsonb, text)"
)


def upgrade() -> None:
    op.execute(
        "ALTER TABLE syncsvc.targets ADD COLUMN capture text NOT NULL DEFAULT 'triggers' "
        "CHECK (capture IN ('triggers', 'wal'))"
    )
    op.execute(f"DROP FUNCTION IF EXISTS {OLD_ADD_TARGET}")


def _old_add_target() -> str:
    """The function as revision 0010 defined it (the definition files describe the head only),
    for the revisions below to find and drop."""
    path = Path(__file__).with_name("0010_sql_admin.py")
    spec = importlib.util.spec_from_file_location("r0010", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pattern = r"CREATE\sFUNCTION syncsvc\.add_target\(.*?\n\$\$;\n"
    found = re.search(pattern, module.UPGRADE, re.S)
    assert found is not None
    return found[0]


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {NEW_ADD_TARGET}")
    op.execute(_old_add_target())
    op.execute(f"REVOKE ALL ON FUNCTION {OLD_ADD_TARGET} FROM PUBLIC")
    op.execute("ALTER TABLE syncsvc.targets DROP COLUMN capture")
