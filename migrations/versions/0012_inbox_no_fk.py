"""The inbox loses its foreign key to ``syncsvc.targets``.

Every application statement on a tracked table inserts one inbox row, and the key's check ran
``SELECT … FROM syncsvc.targets … FOR KEY SHARE`` inside the application's transaction: about
30 µs of a single-row INSERT's 60 µs of server CPU, and a row lock that every writer of every
target took on the same catalog rows (a MultiXact once two writers overlap). The key's one
duty, dropping a removed target's captured keys, is a trigger on ``syncsvc.targets`` now, and
the daemon's expansion skips keys of targets that no longer exist (a writer that captured
while the target was being removed commits after the removal).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE syncsvc.inbox DROP CONSTRAINT IF EXISTS inbox_target_id_fkey;

CREATE FUNCTION syncsvc.forget_inbox() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    DELETE FROM syncsvc.inbox i USING old_targets o WHERE i.target_id = o.id;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION syncsvc.forget_inbox() FROM PUBLIC;

CREATE TRIGGER forget_inbox AFTER DELETE ON syncsvc.targets
    REFERENCING OLD TABLE AS old_targets
    FOR EACH STATEMENT EXECUTE FUNCTION syncsvc.forget_inbox();
"""

DOWNGRADE = r"""
DROP TRIGGER forget_inbox ON syncsvc.targets;
DROP FUNCTION syncsvc.forget_inbox();
DELETE FROM syncsvc.inbox i WHERE NOT EXISTS (SELECT 1 FROM syncsvc.targets t WHERE t.id = i.target_id);
ALTER TABLE syncsvc.inbox ADD CONSTRAINT inbox_target_id_fkey
    FOREIGN KEY (target_id) REFERENCES syncsvc.targets (id) ON DELETE CASCADE;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
