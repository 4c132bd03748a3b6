"""Initial schema: targets, generations, inbox and queue, failures view, hash, truncate helper.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = r"""
CREATE TABLE syncsvc.targets (
    id            integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL UNIQUE CHECK (name ~ '^[a-z_][a-z0-9_]{0,39}$'),
    source_schema text NOT NULL,
    source_table  text NOT NULL,
    pk_columns    text[] NOT NULL,
    pk_types      text[] NOT NULL,
    columns       text[] NOT NULL,
    template      text NOT NULL,
    metric        text NOT NULL DEFAULT 'cosine' CHECK (metric IN ('cosine', 'ip', 'l2')),
    paused_reason text,
    paused_at     timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (source_schema, source_table, name)
);

CREATE TABLE syncsvc.generations (
    id          integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id   integer NOT NULL REFERENCES syncsvc.targets (id) ON DELETE CASCADE,
    key         text NOT NULL,
    provider    text NOT NULL,
    space       text NOT NULL,
    model       text NOT NULL,
    dimensions  integer NOT NULL CHECK (dimensions > 0),
    options     jsonb NOT NULL DEFAULT '{}',
    state       text NOT NULL CHECK (state IN ('building', 'active', 'retired')),
    table_name  text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    promoted_at timestamptz,
    UNIQUE (target_id, key)
);
-- A target searches exactly one space at a time.
CREATE UNIQUE INDEX generations_one_active ON syncsvc.generations (target_id)
    WHERE state = 'active';

CREATE TABLE syncsvc.queue (
    target_id       integer NOT NULL REFERENCES syncsvc.targets (id) ON DELETE CASCADE,
    pk              jsonb NOT NULL,
    state           text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'in_flight', 'failed')),
    priority        smallint NOT NULL DEFAULT 0,
    seq             bigint NOT NULL DEFAULT 1,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    worker          text,
    last_error      text,
    request_id      text,
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target_id, pk)
);
CREATE INDEX queue_ready ON syncsvc.queue (priority, next_attempt_at) WHERE state = 'pending';
CREATE INDEX queue_leases ON syncsvc.queue (lease_until) WHERE state = 'in_flight';
CREATE INDEX queue_failed ON syncsvc.queue (target_id) WHERE state = 'failed';

-- Capture triggers write one row per *statement* here (the keys as a JSON array), so a 100k-row
-- bulk write costs the application one insert; the daemon expands it into the queue above.
CREATE TABLE syncsvc.inbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id  integer NOT NULL REFERENCES syncsvc.targets (id) ON DELETE CASCADE,
    pks        jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Failed items stay in the queue (one entry per row); this view is their dead-letter listing.
CREATE VIEW syncsvc.failures AS
    SELECT t.name AS target, q.pk, q.attempts, q.last_error, q.request_id, q.updated_at
    FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
    WHERE q.state = 'failed';

-- Mirrors syncsvc.models.content_hash: the hash of the exact input for one generation.
CREATE FUNCTION syncsvc.content_hash(generation_key text, input text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN sha256(convert_to(generation_key || chr(31) || input, 'UTF8'));

-- The one definition of a generation's vector table, used by Python and by request_reembed.
-- No pinned search_path: the vector type lives wherever pgvector was installed.
CREATE FUNCTION syncsvc.create_vector_table(generation integer) RETURNS text
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
    RETURN g.table_name;
END
$$;

-- TRUNCATE of a source table: drop every vector and queue entry of the target.
CREATE FUNCTION syncsvc.on_truncate() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target integer := TG_ARGV[0]::integer;
    tbl text;
BEGIN
    FOR tbl IN SELECT table_name FROM syncsvc.generations WHERE target_id = target LOOP
        EXECUTE format('DELETE FROM syncsvc.%I', tbl);
    END LOOP;
    DELETE FROM syncsvc.inbox WHERE target_id = target;
    DELETE FROM syncsvc.queue WHERE target_id = target;
    RETURN NULL;
END
$$;
"""

DOWNGRADE = r"""
DO $$
DECLARE
    t record;
    g record;
BEGIN
    FOR t IN SELECT * FROM syncsvc.targets LOOP
        FOR g IN SELECT tgname FROM pg_trigger
                 WHERE tgrelid = format('%I.%I', t.source_schema, t.source_table)::regclass
                   AND tgname LIKE 'syncsvc\_%' LOOP
            EXECUTE format('DROP TRIGGER %I ON %I.%I', g.tgname, t.source_schema, t.source_table);
        END LOOP;
        EXECUTE format('DROP VIEW IF EXISTS syncsvc.%I', t.name || '_embeddings');
        EXECUTE format('DROP FUNCTION IF EXISTS syncsvc.%I()', 'capture_' || t.id);
    END LOOP;
    FOR g IN SELECT table_name FROM syncsvc.generations LOOP
        EXECUTE format('DROP TABLE IF EXISTS syncsvc.%I CASCADE', g.table_name);
    END LOOP;
END
$$;
DROP FUNCTION syncsvc.on_truncate();
DROP FUNCTION syncsvc.create_vector_table(integer);
DROP FUNCTION syncsvc.content_hash(text, text);
DROP VIEW syncsvc.failures;
DROP TABLE syncsvc.inbox;
DROP TABLE syncsvc.queue;
DROP TABLE syncsvc.generations;
DROP TABLE syncsvc.targets;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
