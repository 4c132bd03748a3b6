"""Each target's due queue entries in due order: the fair claim reads a few per target.

The claim (sql/queue.sql) interleaves the targets of one priority; without this index each
target's first entries would be found by scanning every other target's backlog before them.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX queue_ready_by_target ON syncsvc.queue (target_id, priority, next_attempt_at)"
        " WHERE state = 'pending'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX syncsvc.queue_ready_by_target")
