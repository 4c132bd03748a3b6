"""Least privilege: locked definer functions and search grants that survive every syncsvc DDL.

* No SECURITY DEFINER function of syncsvc (``on_truncate``, ``capture_<id>``) is executable by
  PUBLIC: only their owner may attach them to a table. Triggers fire whatever the writing role
  may execute, so the application keeps being captured. ``on_truncate`` also refuses to run
  on any table but its target's source.
* ``syncsvc.search_grants`` records which roles may search which targets (NULL: all, present
  and future), and ``syncsvc.apply_search_grants()`` (re-)grants exactly what search needs on
  the objects that exist now. ``create_vector_table`` calls it, so do the view switch, a new
  target and ``syncsvc migrate``: grants survive promote, re-embeds and upgrades.

It follows the jobs branch and depends on the others (search, ops, sparse): it reads all of them.

Revision ID: 0007
Revises: 0006 (depends on 0002, 0004, 0005)
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = ("0002", "0004", "0005")

# create_vector_table as 0005 left it, plus the grants of the new table.
CREATE_VECTOR_TABLE = r"""
CREATE OR REPLACE FUNCTION syncsvc.create_vector_table(generation integer) RETURNS text
    LANGUAGE plpgsql AS $$
DECLARE
    g syncsvc.generations;
    t syncsvc.targets;
    key_defs text;
    key_list text;
BEGIN
    SELECT * INTO STRICT g FROM syncsvc.generations WHERE id = generation;
    SELECT * INTO STRICT t FROM syncsvc.targets WHERE id = g.target_id;
    -- pk_types are format_type() output recorded when the target was validated.
    SELECT string_agg(format('%I %s NOT NULL', k.col, k.typ), ', ' ORDER BY k.ord),
           string_agg(format('%I', k.col), ', ' ORDER BY k.ord)
    INTO key_defs, key_list
    FROM unnest(t.pk_columns, t.pk_types) WITH ORDINALITY AS k(col, typ, ord);
    EXECUTE format(
        'CREATE TABLE syncsvc.%I (%s, chunk integer NOT NULL DEFAULT 0, '
        'embedding vector(%s) NOT NULL, content_hash bytea NOT NULL, tokens integer, '
        'truncated boolean NOT NULL DEFAULT false, '
        'embedded_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (%s, chunk))',
        g.table_name, key_defs, g.dimensions, key_list);
    IF g.dimensions <= 1536 THEN
        -- Small enough to stay in the row: exact scans then skip de-TOASTing every vector.
        EXECUTE format('ALTER TABLE syncsvc.%I ALTER COLUMN embedding SET STORAGE PLAIN',
                       g.table_name);
    END IF;
    IF coalesce((g.options ->> 'sparse')::boolean, false) THEN
        -- DashScope sparse output {token id: weight}; NULL if the provider returned none.
        EXECUTE format('ALTER TABLE syncsvc.%I ADD COLUMN sparse sparsevec(1000000)',
                       g.table_name);
    END IF;
    PERFORM syncsvc.apply_search_grants(g.target_id);
    RETURN g.table_name;
END
$$;
"""

UPGRADE = (
    r"""
CREATE TABLE syncsvc.search_grants (
    role_name  name NOT NULL,
    target_id  integer REFERENCES syncsvc.targets (id) ON DELETE CASCADE,
    granted_by name NOT NULL DEFAULT current_user,
    granted_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX search_grants_one ON syncsvc.search_grants (role_name, coalesce(target_id, 0));
COMMENT ON TABLE syncsvc.search_grants IS
    'syncsvc: roles that may search a target (target_id NULL: every target); see grant_search';

-- Grants what search needs to every recorded role, on the objects that exist now (only those
-- of one target when given). Idempotent; runs as the caller, who must own syncsvc's objects.
CREATE FUNCTION syncsvc.apply_search_grants(target integer DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    granted integer := 0;
BEGIN
    FOR r IN SELECT DISTINCT role_name FROM syncsvc.search_grants
             WHERE target IS NULL OR target_id IS NULL OR target_id = target LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA syncsvc TO %I', r.role_name);
        -- The catalog tells a search which generation table to read; the caches give repeated
        -- queries their vectors. Cache rows are written by syncsvc only, so nobody can plant a
        -- vector for another user's query.
        EXECUTE format('GRANT SELECT ON syncsvc.targets, syncsvc.generations, '
                       'syncsvc.query_cache, syncsvc.sparse_query_cache TO %I', r.role_name);
        -- Text queries asked for from SQL (revision 0009): a daemon embeds them.
        IF to_regclass('syncsvc.query_requests') IS NOT NULL THEN
            -- Only what filing a request takes: its key is derived, its answer the daemon's.
            EXECUTE format('GRANT SELECT, INSERT (generation_id, query), '
                           'UPDATE (state, error, requested_at) ON syncsvc.query_requests TO %I',
                           r.role_name);
        END IF;
    END LOOP;
    FOR r IN SELECT sg.role_name, t.name, g.table_name
             FROM syncsvc.search_grants sg
             JOIN syncsvc.targets t ON sg.target_id IS NULL OR sg.target_id = t.id
             JOIN syncsvc.generations g ON g.target_id = t.id
             WHERE target IS NULL OR t.id = target LOOP
        IF to_regclass(format('syncsvc.%I', r.table_name)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON syncsvc.%I TO %I', r.table_name, r.role_name);
            granted := granted + 1;
        END IF;
        IF to_regclass(format('syncsvc.%I', r.name || '_embeddings')) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON syncsvc.%I TO %I', r.name || '_embeddings',
                           r.role_name);
        END IF;
    END LOOP;
    RETURN granted;
END
$$;

-- syncsvc grant search ROLE [--target T]: one implementation for the CLI, Python and psql.
CREATE FUNCTION syncsvc.grant_search(grantee name, target text DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grantee) THEN
        RAISE EXCEPTION 'role % does not exist', grantee USING ERRCODE = 'undefined_object';
    END IF;
    IF target IS NOT NULL THEN
        SELECT id INTO tid FROM syncsvc.targets WHERE name = target;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    INSERT INTO syncsvc.search_grants (role_name, target_id) VALUES (grantee, tid)
        ON CONFLICT (role_name, coalesce(target_id, 0)) DO NOTHING;
    RETURN syncsvc.apply_search_grants(tid);
END
$$;

CREATE FUNCTION syncsvc.revoke_search(grantee name, target text DEFAULT NULL) RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    DELETE FROM syncsvc.search_grants sg
    WHERE sg.role_name = grantee
      AND (target IS NULL
           OR sg.target_id = (SELECT id FROM syncsvc.targets WHERE name = target));
    FOR r IN SELECT t.name, g.table_name FROM syncsvc.targets t
             JOIN syncsvc.generations g ON g.target_id = t.id
             WHERE (target IS NULL OR t.name = target)
               AND NOT EXISTS (SELECT 1 FROM syncsvc.search_grants sg
                               WHERE sg.role_name = grantee
                                 AND (sg.target_id IS NULL OR sg.target_id = t.id)) LOOP
        IF to_regclass(format('syncsvc.%I', r.table_name)) IS NOT NULL THEN
            EXECUTE format('REVOKE SELECT ON syncsvc.%I FROM %I', r.table_name, grantee);
        END IF;
        IF to_regclass(format('syncsvc.%I', r.name || '_embeddings')) IS NOT NULL THEN
            EXECUTE format('REVOKE SELECT ON syncsvc.%I FROM %I', r.name || '_embeddings',
                           grantee);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM syncsvc.search_grants sg
                   WHERE sg.role_name = grantee) THEN
        EXECUTE format('REVOKE SELECT ON syncsvc.targets, syncsvc.generations, '
                       'syncsvc.query_cache, syncsvc.sparse_query_cache FROM %I', grantee);
        IF to_regclass('syncsvc.query_requests') IS NOT NULL THEN
            EXECUTE format('REVOKE ALL ON syncsvc.query_requests FROM %I', grantee);
        END IF;
        EXECUTE format('REVOKE USAGE ON SCHEMA syncsvc FROM %I', grantee);
    END IF;
END
$$;

-- TRUNCATE of a source table: drop every vector and queue entry of the target, and only when
-- the trigger sits on that target's own table.
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

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'syncsvc'::regnamespace AND p.prosecdef LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
"""
    + CREATE_VECTOR_TABLE
)

DOWNGRADE = r"""
DROP FUNCTION syncsvc.revoke_search(name, text);
DROP FUNCTION syncsvc.grant_search(name, text);
DROP FUNCTION syncsvc.apply_search_grants(integer);
DROP TABLE syncsvc.search_grants;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    # create_vector_table must stop calling apply_search_grants before it is dropped: take
    # 0005's version back (the text of the function here, without that call).
    op.execute(CREATE_VECTOR_TABLE.replace("    PERFORM syncsvc.apply_search_grants(g.target_id);\n", ""))
    op.execute(DOWNGRADE)
