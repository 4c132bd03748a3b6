-- Vector tables and the capture's truncate trigger function (attached to application
-- tables by each target: CREATE OR REPLACE keeps its OID, so installed triggers stay valid).
--
-- Applied by migrate after the Alembic revisions, on every migrate, in one transaction:
-- each definition is CREATE OR REPLACE and is the only one at head. A changed signature
-- needs a revision that drops the old one.

CREATE OR REPLACE FUNCTION syncsvc.create_vector_table(generation integer)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
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
$function$;

-- pgvector indexes vector up to 2,000 dims, halfvec up to 4,000, bit up to 64,000. Above 2,000
-- the index is on an expression and the search fetches more candidates, re-ranked exactly.
CREATE OR REPLACE FUNCTION syncsvc.vector_strategy(dimensions integer, metric text)
 RETURNS TABLE(kind text, index_expr text, opclass text, ann_expr text, candidates_factor integer, min_candidates integer)
 LANGUAGE sql
 IMMUTABLE
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION syncsvc.on_truncate()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;
