"""Partitioned tables are captured whole: every partition carries the capture triggers.

A statement trigger fires only for the table a statement names, so a write naming a partition
(``INSERT INTO app.events_p1 …``) never reaches the parent's triggers. ``syncsvc target add``
installs the capture triggers on every partition of a partitioned table, and the daemon keeps
the partition tree reconciled (partitions created, attached, detached or dropped later):

* ``syncsvc.targets.partitions``: the partitions the capture was last reconciled with
  (``{"oid": "schema.name"}``), so a dropped or detached partition is noticed even when its
  triggers went with it.
* ``syncsvc.targets.capture_drift``: what the daemon is reconciling right now ("partition
  app.events_p3 attached; sweeping"), shown by status until the sweep that fixes it is done.
* ``syncsvc.partition_changes()``: the one definition of "the partition tree no longer matches
  the capture"; the daemon polls it (cheap: catalog only) and ``syncsvc.capture_drift`` words it.
* ``syncsvc.on_truncate``: TRUNCATE of one partition wakes the daemons, whose sweep of the
  target removes that partition's vectors.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE syncsvc.targets ADD COLUMN partitions jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN capture_drift text;

-- A relation's name, always schema-qualified (regclass::text drops a schema on the path).
CREATE FUNCTION syncsvc.qualified_name(rel oid) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT format('%I.%I', n.nspname, c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel);

-- Per target, each partition whose capture does not match the tree:
--   added     in the tree (created or attached), without the capture triggers
--   detached  carries the triggers, or was reconciled, but is no longer in the tree
--   dropped   was reconciled and no longer exists
--   foreign   a foreign-table partition: statement triggers cannot capture writes naming it
-- 'added' and 'foreign' of a partition already reconciled are not changes: a foreign partition
-- is reported once, then left to the periodic sweep.
CREATE FUNCTION syncsvc.partition_changes()
    RETURNS TABLE (target_id integer, relid oid, name text, change text)
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    WITH t0 AS (
        SELECT t.id, t.partitions, to_regclass(format('%I.%I', t.source_schema, t.source_table))
                   AS root
        FROM syncsvc.targets t
    ), t AS (
        -- A table renamed or dropped is the drift machinery's (the target pauses), not this.
        SELECT * FROM t0 WHERE root IS NOT NULL
    ), tree AS (
        SELECT t.id, p.relid, c.relkind
        FROM t CROSS JOIN LATERAL pg_partition_tree(t.root) p
        JOIN pg_class c ON c.oid = p.relid
        WHERE p.relid <> t.root
    ), triggered AS (
        SELECT t.id, g.tgrelid AS relid
        FROM t JOIN pg_trigger g ON g.tgname = 'syncsvc_' || t.id || '_ins'
        WHERE g.tgrelid IS DISTINCT FROM t.root::oid
    ), known AS (
        SELECT t.id, k::oid AS relid FROM t CROSS JOIN LATERAL jsonb_object_keys(t.partitions) k
    )
    SELECT x.id, x.relid, syncsvc.qualified_name(x.relid), 'added' FROM tree x
    WHERE x.relkind IN ('r', 'p')
      AND NOT EXISTS (SELECT 1 FROM triggered g WHERE g.id = x.id AND g.relid = x.relid)
    UNION ALL
    SELECT x.id, x.relid, syncsvc.qualified_name(x.relid), 'foreign' FROM tree x
    WHERE x.relkind = 'f'
      AND NOT EXISTS (SELECT 1 FROM known k WHERE k.id = x.id AND k.relid = x.relid)
    UNION ALL
    SELECT g.id, g.relid, syncsvc.qualified_name(g.relid), 'detached'
    FROM (SELECT id, relid FROM triggered UNION SELECT id, relid FROM known) g
    WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = g.relid)
      AND NOT EXISTS (SELECT 1 FROM tree x WHERE x.id = g.id AND x.relid = g.relid)
    UNION ALL
    SELECT k.id, k.relid, t.partitions ->> k.relid::text, 'dropped'
    FROM known k JOIN t ON t.id = k.id
    WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = k.relid)
$$;

-- The words for one partition change: status, the admin page and the daemon's log say this.
CREATE FUNCTION syncsvc.describe_partition_change(name text, change text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    RETURN CASE change
        WHEN 'added' THEN format('partition %s attached; sweeping', name)
        WHEN 'detached' THEN format('partition %s detached; removing its vectors', name)
        WHEN 'dropped' THEN format('partition %s dropped; removing its vectors', name)
        ELSE format('partition %s is a foreign table: writes naming it are found by the '
                    'periodic sweep only', name)
    END;

-- Why a target's vectors and its source disagree in a way the daemon is about to fix: what
-- the daemon says it is doing (or why it cannot yet), else what the catalog shows.
CREATE VIEW syncsvc.capture_drift AS
    WITH c AS (
        SELECT c.target_id,
               string_agg(syncsvc.describe_partition_change(c.name, c.change), '; '
                          ORDER BY c.name) AS note
        FROM syncsvc.partition_changes() c
        GROUP BY c.target_id
    )
    SELECT t.name AS target, coalesce(t.capture_drift, c.note) AS drift
    FROM syncsvc.targets t LEFT JOIN c ON c.target_id = t.id;

CREATE OR REPLACE FUNCTION syncsvc.on_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := TG_ARGV[0]::integer;
    tbl text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.targets t
                   WHERE t.id = target AND t.source_schema = TG_TABLE_SCHEMA
                     AND t.source_table = TG_TABLE_NAME) THEN
        -- One partition of the target's table: its rows are gone, the sweep of the target
        -- (woken here, and periodic) removes their vectors.
        IF EXISTS (SELECT 1 FROM syncsvc.targets t
                   JOIN pg_partition_ancestors(TG_RELID) a
                     ON a.relid = to_regclass(format('%I.%I', t.source_schema, t.source_table))
                   WHERE t.id = target) THEN
            PERFORM pg_notify('syncsvc_targets', target::text);
        END IF;
        RETURN NULL;
    END IF;
    FOR tbl IN SELECT table_name FROM syncsvc.generations WHERE target_id = target LOOP
        EXECUTE format('DELETE FROM syncsvc.%I', tbl);
    END LOOP;
    DELETE FROM syncsvc.inbox WHERE target_id = target;
    DELETE FROM syncsvc.queue WHERE target_id = target;
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION syncsvc.on_truncate() FROM PUBLIC;
"""

DOWNGRADE = r"""
CREATE OR REPLACE FUNCTION syncsvc.on_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := TG_ARGV[0]::integer;
    tbl text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.targets t
                   WHERE t.id = target AND t.source_schema = TG_TABLE_SCHEMA
                     AND t.source_table = TG_TABLE_NAME) THEN
        RETURN NULL;
    END IF;
    FOR tbl IN SELECT table_name FROM syncsvc.generations WHERE target_id = target LOOP
        EXECUTE format('DELETE FROM syncsvc.%I', tbl);
    END LOOP;
    DELETE FROM syncsvc.inbox WHERE target_id = target;
    DELETE FROM syncsvc.queue WHERE target_id = target;
    RETURN NULL;
END
$$;
DROP VIEW syncsvc.capture_drift;
DROP FUNCTION syncsvc.describe_partition_change(text, text);
DROP FUNCTION syncsvc.partition_changes();
DROP FUNCTION syncsvc.qualified_name(oid);
ALTER TABLE syncsvc.targets DROP COLUMN capture_drift, DROP COLUMN partitions;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
