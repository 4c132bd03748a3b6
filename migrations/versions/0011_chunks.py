"""Chunks of their own: each vector row of a chunked generation records where its chunk lies
in the row's text (``chunk_start``, ``chunk_end``: character offsets) and the digest of the
chunk's text (``chunk_hash``), so an edit re-embeds only the chunks whose text changed.

The generation option ``chunking`` ({"tokens", "overlap", "mode"}) turns it on; the columns
exist (NULL) in every vector table so every generation has one shape. ``search_query`` fetches
more candidates for chunked generations: they are chunks, and collapse to one hit per row.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# create_vector_table as 0007 left it, with the chunk columns.
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
        'embedded_at timestamptz NOT NULL DEFAULT now(), chunk_start integer, '
        'chunk_end integer, chunk_hash bytea, PRIMARY KEY (%s, chunk))',
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

-- The SQL of a search; $1 is the query vector. Nearest candidates by the index expression,
-- then exact distances (re-ranking quantized candidates), one row per key (chunks collapse).
CREATE OR REPLACE FUNCTION syncsvc.search_query(target text, k integer DEFAULT 10, filter text DEFAULT NULL,
                                     generation integer DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    g record;
    s record;
    exact text;
    pk_obj text;
    source_match text;
    where_clause text := '';
    candidates integer;
BEGIN
    IF k IS NULL OR k < 1 OR k > 10000 THEN
        RAISE EXCEPTION 'k must be between 1 and 10000, not %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO g FROM syncsvc.search_generation(target, generation);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no % generation', target,
            coalesce(generation::text, 'active') USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO s FROM syncsvc.vector_strategy(g.dimensions, g.metric);
    exact := format('v.embedding %s $1',
                    CASE g.metric WHEN 'cosine' THEN '<=>' WHEN 'ip' THEN '<#>' ELSE '<->' END);
    SELECT string_agg(format('%L, v.%I', c, c), ', '),
           string_agg(format('s.%I = v.%I', c, c), ' AND ')
      INTO pk_obj, source_match FROM unnest(g.pk_columns) AS c;
    IF filter IS NOT NULL AND btrim(filter) <> '' THEN
        -- EXISTS keeps unqualified column names in the filter resolving to the source row.
        where_clause := format('WHERE EXISTS (SELECT 1 FROM %I.%I s WHERE %s AND (%s))',
                               g.source_schema, g.source_table, source_match, filter);
    END IF;
    candidates := greatest(k * s.candidates_factor, s.min_candidates);
    IF (SELECT x.options ? 'chunking' FROM syncsvc.generations x WHERE x.id = g.generation_id) THEN
        -- Candidates are chunks and collapse to rows: a long document's many chunks must not
        -- crowd the other rows out of the k.
        candidates := least(candidates * 20, 200000);
    END IF;
    RETURN format(
        'SELECT c.pk, min(c.distance)::double precision AS distance FROM ('
        'SELECT jsonb_build_object(%s) AS pk, %s AS distance FROM syncsvc.%I v %s '
        'ORDER BY %s LIMIT %s) c GROUP BY c.pk ORDER BY 2, 1 LIMIT %s',
        pk_obj, exact, g.table_name, where_clause, s.ann_expr, candidates, k);
END
$$;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT table_name FROM syncsvc.generations LOOP
        IF to_regclass(format('syncsvc.%I', g.table_name)) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE syncsvc.%I ADD COLUMN IF NOT EXISTS chunk_start integer, '
                           'ADD COLUMN IF NOT EXISTS chunk_end integer, '
                           'ADD COLUMN IF NOT EXISTS chunk_hash bytea', g.table_name);
        END IF;
    END LOOP;
END
$$;
"""

DOWNGRADE = r"""
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

-- The SQL of a search; $1 is the query vector. Nearest candidates by the index expression,
-- then exact distances (re-ranking quantized candidates), one row per key (chunks collapse).
CREATE OR REPLACE FUNCTION syncsvc.search_query(target text, k integer DEFAULT 10, filter text DEFAULT NULL,
                                     generation integer DEFAULT NULL) RETURNS text
    LANGUAGE plpgsql STABLE AS $$
DECLARE
    g record;
    s record;
    exact text;
    pk_obj text;
    source_match text;
    where_clause text := '';
    candidates integer;
BEGIN
    IF k IS NULL OR k < 1 OR k > 10000 THEN
        RAISE EXCEPTION 'k must be between 1 and 10000, not %', k
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO g FROM syncsvc.search_generation(target, generation);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no % generation', target,
            coalesce(generation::text, 'active') USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO s FROM syncsvc.vector_strategy(g.dimensions, g.metric);
    exact := format('v.embedding %s $1',
                    CASE g.metric WHEN 'cosine' THEN '<=>' WHEN 'ip' THEN '<#>' ELSE '<->' END);
    SELECT string_agg(format('%L, v.%I', c, c), ', '),
           string_agg(format('s.%I = v.%I', c, c), ' AND ')
      INTO pk_obj, source_match FROM unnest(g.pk_columns) AS c;
    IF filter IS NOT NULL AND btrim(filter) <> '' THEN
        -- EXISTS keeps unqualified column names in the filter resolving to the source row.
        where_clause := format('WHERE EXISTS (SELECT 1 FROM %I.%I s WHERE %s AND (%s))',
                               g.source_schema, g.source_table, source_match, filter);
    END IF;
    candidates := greatest(k * s.candidates_factor, s.min_candidates);
    RETURN format(
        'SELECT c.pk, min(c.distance)::double precision AS distance FROM ('
        'SELECT jsonb_build_object(%s) AS pk, %s AS distance FROM syncsvc.%I v %s '
        'ORDER BY %s LIMIT %s) c GROUP BY c.pk ORDER BY 2, 1 LIMIT %s',
        pk_obj, exact, g.table_name, where_clause, s.ann_expr, candidates, k);
END
$$;

DO $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT table_name FROM syncsvc.generations LOOP
        IF to_regclass(format('syncsvc.%I', g.table_name)) IS NOT NULL THEN
            EXECUTE format('ALTER TABLE syncsvc.%I DROP COLUMN IF EXISTS chunk_start, '
                           'DROP COLUMN IF EXISTS chunk_end, DROP COLUMN IF EXISTS chunk_hash',
                           g.table_name);
        END IF;
    END LOOP;
END
$$;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
