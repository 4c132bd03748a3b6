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


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {NEW_ADD_TARGET}")
    op.execute("ALTER TABLE syncsvc.targets DROP COLUMN capture")
