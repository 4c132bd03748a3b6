"""Search: the query-vector cache and the SQL search surface (works from psql alone).

* ``syncsvc.query_cache``: query vectors keyed by generation and a hash of (instruction, text),
  so a repeated query costs no API call and a vector is never compared with another space.
* ``syncsvc.vector_strategy(dims, metric)``: how a generation is indexed and searched; the index
  builder and the search query both read it, so the ORDER BY always matches the index expression.
* ``syncsvc.search_query(target, k, filter, generation)``: the SQL text of a search (``$1`` is the
  query vector), for EXPLAIN and for users who want to adapt it.
* ``syncsvc.search_by_vector(target, query, k, filter, generation)`` and
  ``syncsvc.similar_rows(target, pk, k, filter, generation)``: ``(pk jsonb, distance)`` rows.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = ("search",)
depends_on = None

UPGRADE = r"""
CREATE TABLE syncsvc.query_cache (
    generation_id integer NOT NULL REFERENCES syncsvc.generations (id) ON DELETE CASCADE,
    query_hash    bytea NOT NULL,
    embedding     vector NOT NULL,
    tokens        integer,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz NOT NULL DEFAULT now(),
    hits          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (generation_id, query_hash)
);
CREATE INDEX query_cache_last_used ON syncsvc.query_cache (last_used_at);
COMMENT ON TABLE syncsvc.query_cache IS
    'syncsvc: query vectors per generation; query_hash = sha256(instruct || chr(31) || text)';

-- The generation a search reads: the active one, or the one asked for by id.
CREATE FUNCTION syncsvc.search_generation(target text, generation integer DEFAULT NULL)
    RETURNS TABLE (generation_id integer, generation_key text, table_name text,
                   dimensions integer, metric text, source_schema text, source_table text,
                   pk_columns text[], pk_types text[])
    LANGUAGE sql STABLE AS $$
    SELECT g.id, g.key, g.table_name, g.dimensions, t.metric, t.source_schema, t.source_table,
           t.pk_columns, t.pk_types
    FROM syncsvc.targets t JOIN syncsvc.generations g ON g.target_id = t.id
    WHERE t.name = $1 AND CASE WHEN $2 IS NULL THEN g.state = 'active' ELSE g.id = $2 END
$$;

-- pgvector indexes vector up to 2,000 dims, halfvec up to 4,000, bit up to 64,000. Above 2,000
-- the index is on an expression and the search fetches more candidates, re-ranked exactly.
CREATE FUNCTION syncsvc.vector_strategy(dimensions integer, metric text)
    RETURNS TABLE (kind text, index_expr text, opclass text, ann_expr text,
                   candidates_factor integer, min_candidates integer)
    LANGUAGE sql IMMUTABLE AS $$
    SELECT s.kind,
           CASE s.kind WHEN 'vector' THEN 'embedding'
                       WHEN 'halfvec' THEN format('(embedding::halfvec(%s))', $1)
                       ELSE format('(binary_quantize(embedding)::bit(%s))', $1) END,
           CASE s.kind WHEN 'binary' THEN 'bit_hamming_ops'
                       ELSE s.kind || '_' || m.ops || '_ops' END,
           CASE s.kind WHEN 'vector' THEN format('v.embedding %s $1', m.op)
                       WHEN 'halfvec' THEN format('(v.embedding::halfvec(%s)) %s ($1::halfvec(%s))',
                                                  $1, m.op, $1)
                       ELSE format('(binary_quantize(v.embedding)::bit(%s)) <~> '
                                   '(binary_quantize($1)::bit(%s))', $1, $1) END,
           s.factor, s.floor
    FROM (SELECT CASE WHEN $1 <= 2000 THEN 'vector' WHEN $1 <= 4000 THEN 'halfvec'
                      ELSE 'binary' END AS kind) k
    CROSS JOIN LATERAL (VALUES (k.kind,
        CASE k.kind WHEN 'vector' THEN 2 WHEN 'halfvec' THEN 4 ELSE 10 END,
        CASE k.kind WHEN 'vector' THEN 0 WHEN 'halfvec' THEN 40 ELSE 100 END))
        AS s(kind, factor, floor)
    CROSS JOIN LATERAL (
        SELECT CASE $2 WHEN 'cosine' THEN 'cosine' WHEN 'ip' THEN 'ip' ELSE 'l2' END,
               CASE $2 WHEN 'cosine' THEN '<=>' WHEN 'ip' THEN '<#>' ELSE '<->' END
    ) AS m(ops, op)
$$;

-- A row key given as {"col": value}, [value, ...] or a bare value, as a {"col": value} object.
CREATE FUNCTION syncsvc.key_object(pk_columns text[], pk jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF jsonb_typeof(pk) = 'object' THEN
        RETURN pk;
    ELSIF jsonb_typeof(pk) = 'array' THEN
        IF jsonb_array_length(pk) <> cardinality(pk_columns) THEN
            RAISE EXCEPTION 'key % has % values; the key is (%)', pk, jsonb_array_length(pk),
                array_to_string(pk_columns, ', ') USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN (SELECT jsonb_object_agg(c, pk -> (i::int - 1))
                FROM unnest(pk_columns) WITH ORDINALITY AS u(c, i));
    ELSIF cardinality(pk_columns) = 1 THEN
        RETURN jsonb_build_object(pk_columns[1], pk);
    END IF;
    RAISE EXCEPTION 'key % must be an object or array of (%)', pk,
        array_to_string(pk_columns, ', ') USING ERRCODE = 'invalid_parameter_value';
END
$$;

-- The SQL of a search; $1 is the query vector. Nearest candidates by the index expression,
-- then exact distances (re-ranking quantized candidates), one row per key (chunks collapse).
CREATE FUNCTION syncsvc.search_query(target text, k integer DEFAULT 10, filter text DEFAULT NULL,
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

CREATE FUNCTION syncsvc.search_by_vector(target text, query vector, k integer DEFAULT 10,
                                         filter text DEFAULT NULL,
                                         generation integer DEFAULT NULL)
    RETURNS TABLE (pk jsonb, distance double precision)
    LANGUAGE plpgsql AS $$
DECLARE
    g record;
BEGIN
    SELECT * INTO g FROM syncsvc.search_generation(target, generation);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no % generation', target,
            coalesce(generation::text, 'active') USING ERRCODE = 'no_data_found';
    END IF;
    -- Never compare vectors of different spaces: at least the dimensions must agree.
    IF vector_dims(query) <> g.dimensions THEN
        RAISE EXCEPTION 'query vector has % dimensions but generation % of target % has %',
            vector_dims(query), g.generation_id, target, g.dimensions
            USING ERRCODE = 'data_exception';
    END IF;
    RETURN QUERY EXECUTE syncsvc.search_query(target, k, filter, g.generation_id) USING query;
END
$$;

CREATE FUNCTION syncsvc.similar_rows(target text, row_key jsonb, k integer DEFAULT 10,
                                     filter text DEFAULT NULL, generation integer DEFAULT NULL)
    RETURNS TABLE (pk jsonb, distance double precision)
    LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    g record;
    key jsonb;
    stored vector;
    pk_obj text;
    key_match text;
BEGIN
    SELECT * INTO g FROM syncsvc.search_generation(target, generation);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no % generation', target,
            coalesce(generation::text, 'active') USING ERRCODE = 'no_data_found';
    END IF;
    key := syncsvc.key_object(g.pk_columns, row_key);
    SELECT string_agg(format('%L, v.%I', c, c), ', '),
           string_agg(format('v.%I = ($1 ->> %L)::%s', c, c, t), ' AND ')
      INTO pk_obj, key_match FROM unnest(g.pk_columns, g.pk_types) AS u(c, t);
    EXECUTE format('SELECT jsonb_build_object(%s), v.embedding FROM syncsvc.%I v WHERE %s '
                   'ORDER BY v.chunk LIMIT 1', pk_obj, g.table_name, key_match)
        INTO key, stored USING key;
    IF stored IS NULL THEN
        RAISE EXCEPTION 'row % of target % has no vector in generation %', row_key, target,
            g.generation_id USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY
        SELECT r.pk, r.distance
        FROM syncsvc.search_by_vector(target, stored, k + 1, filter, g.generation_id) r
        WHERE r.pk <> key ORDER BY r.distance LIMIT k;
END
$$;

COMMENT ON FUNCTION syncsvc.search_by_vector(text, vector, integer, text, integer) IS
    'syncsvc: k nearest rows of a target to a vector: (pk jsonb, distance); filter is a SQL '
    'boolean expression over the source row (alias s)';
COMMENT ON FUNCTION syncsvc.similar_rows(text, jsonb, integer, text, integer) IS
    'syncsvc: k rows nearest to a stored row (more like this), without any API call';

-- pgvector 0.8 iterative index scans: keep scanning the HNSW graph until enough rows pass the
-- filter (the outer ORDER BY restores strict order). Older pgvector lacks the setting.
-- Until pgvector's library is loaded in this session the setting is only a placeholder, which
-- a non-superuser may not put on a function; any vector value loads the library.
DO $$
BEGIN
    PERFORM '[0]'::vector;
    IF string_to_array((SELECT extversion FROM pg_extension WHERE extname = 'vector'), '.')::int[]
       >= ARRAY[0, 8] THEN
        ALTER FUNCTION syncsvc.search_by_vector(text, vector, integer, text, integer)
            SET hnsw.iterative_scan = relaxed_order;
    END IF;
END
$$;
"""

DOWNGRADE = r"""
DROP FUNCTION syncsvc.similar_rows(text, jsonb, integer, text, integer);
DROP FUNCTION syncsvc.search_by_vector(text, vector, integer, text, integer);
DROP FUNCTION syncsvc.search_query(text, integer, text, integer);
DROP FUNCTION syncsvc.key_object(text[], jsonb);
DROP FUNCTION syncsvc.vector_strategy(integer, text);
DROP FUNCTION syncsvc.search_generation(text, integer);
DROP TABLE syncsvc.query_cache;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
