"""Sparse vectors: a generation with the option ``"sparse": true`` stores DashScope's sparse output.

Its vector table gets a nullable ``sparse sparsevec`` column beside the dense embedding, used by
hybrid search, and ``syncsvc.sparse_query_cache`` keeps the sparse vectors of queries (as
``query_cache`` keeps the dense ones; a separate table so this branch needs only 0001). The dimension bounds the token ids (DashScope's Qwen vocabulary is ~152k, the
simulator's 250k); a sparsevec stores only its non-zero entries, so a generous bound costs
nothing. It must equal ``syncsvc.vectors.SPARSE_DIMENSIONS``.

Revision ID: 0005
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = ("sparse",)
depends_on = None

UPGRADE = r"""
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
    RETURN g.table_name;
END
$$;

CREATE TABLE syncsvc.sparse_query_cache (
    generation_id integer NOT NULL REFERENCES syncsvc.generations (id) ON DELETE CASCADE,
    query_hash    bytea NOT NULL,
    sparse        sparsevec NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation_id, query_hash)
);
CREATE INDEX sparse_query_cache_last_used ON syncsvc.sparse_query_cache (last_used_at);
COMMENT ON TABLE syncsvc.sparse_query_cache IS
    'syncsvc: sparse query vectors per generation, keyed like syncsvc.query_cache';
"""

# The function as revision 0001 defined it.
DOWNGRADE = r"""
DROP TABLE syncsvc.sparse_query_cache;
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
    RETURN g.table_name;
END
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
