-- Searches from SQL (PUBLIC may execute these: see syncsvc/privileges.py PUBLIC_FUNCTIONS).
--
-- Applied by migrate after the Alembic revisions, on every migrate, in one transaction:
-- each definition is CREATE OR REPLACE and is the only one at head. A changed signature
-- needs a revision that drops the old one.

-- The generation a search reads: the active one, or the one asked for by id.
CREATE OR REPLACE FUNCTION syncsvc.search_generation(target text, generation integer DEFAULT NULL::integer)
 RETURNS TABLE(generation_id integer, generation_key text, table_name text, dimensions integer, metric text, source_schema text, source_table text, pk_columns text[], pk_types text[])
 LANGUAGE sql
 STABLE
AS $function$
    SELECT g.id, g.key, g.table_name, g.dimensions, t.metric, t.source_schema, t.source_table,
           t.pk_columns, t.pk_types
    FROM syncsvc.targets t JOIN syncsvc.generations g ON g.target_id = t.id
    WHERE t.name = $1 AND CASE WHEN $2 IS NULL THEN g.state = 'active' ELSE g.id = $2 END
$function$;

CREATE OR REPLACE FUNCTION syncsvc.search_by_vector(target text, query vector, k integer DEFAULT 10, filter text DEFAULT NULL::text, generation integer DEFAULT NULL::integer)
 RETURNS TABLE(pk jsonb, distance double precision)
 LANGUAGE plpgsql
AS $function$
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
$function$;

COMMENT ON FUNCTION syncsvc.search_by_vector(text, vector, integer, text, integer) IS
    'syncsvc: k nearest rows of a target to a vector: (pk jsonb, distance); filter is a SQL boolean expression over the source row (alias s)';

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

CREATE OR REPLACE FUNCTION syncsvc.similar_rows(target text, row_key jsonb, k integer DEFAULT 10, filter text DEFAULT NULL::text, generation integer DEFAULT NULL::integer)
 RETURNS TABLE(pk jsonb, distance double precision)
 LANGUAGE plpgsql
AS $function$
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
$function$;

COMMENT ON FUNCTION syncsvc.similar_rows(text, jsonb, integer, text, integer) IS
    'syncsvc: k rows nearest to a stored row (more like this), without any API call';

-- The cached vector of a text query in a target's active generation, or NULL.
CREATE OR REPLACE FUNCTION syncsvc.query_vector(target text, query text)
 RETURNS vector
 LANGUAGE sql
 STABLE
AS $function$
    -- Positional: a parameter named like a column (query_requests.query) would lose to it.
    SELECT c.embedding
    FROM syncsvc.search_generation($1) g
    JOIN syncsvc.query_requests r ON r.generation_id = g.generation_id
         AND r.requested_by = current_user
         AND r.text_hash = syncsvc.text_digest($2) AND r.state = 'done'
    JOIN syncsvc.query_cache c ON c.generation_id = r.generation_id
         AND c.query_hash = r.query_hash
$function$;

-- The SQL of a search; $1 is the query vector. Nearest candidates by the index expression,
-- then exact distances (re-ranking quantized candidates), one row per key (chunks collapse).
CREATE OR REPLACE FUNCTION syncsvc.search_query(target text, k integer DEFAULT 10, filter text DEFAULT NULL::text, generation integer DEFAULT NULL::integer)
 RETURNS text
 LANGUAGE plpgsql
 STABLE
AS $function$
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
$function$;

-- The k rows nearest to a text query that embed_query has embedded (from the cache).
CREATE OR REPLACE FUNCTION syncsvc.search(target text, query text, k integer DEFAULT 10, filter text DEFAULT NULL::text)
 RETURNS TABLE(pk jsonb, distance double precision)
 LANGUAGE plpgsql
AS $function$
DECLARE
    v vector := syncsvc.query_vector(target, query);
BEGIN
    IF v IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'no_data_found', MESSAGE = format(
            'the query %L is not embedded yet: CALL syncsvc.embed_query(%L, %L) first',
            query, target, query);
    END IF;
    RETURN QUERY SELECT s.pk, s.distance FROM syncsvc.search_by_vector(target, v, k, filter) s;
END
$function$;

COMMENT ON FUNCTION syncsvc.search(text, text, integer, text) IS
    'syncsvc: k nearest rows to a text query (CALL syncsvc.embed_query first; cached after)';

CREATE OR REPLACE PROCEDURE syncsvc.embed_query(IN target text, IN query text, IN timeout_seconds double precision DEFAULT 10)
 LANGUAGE plpgsql
AS $procedure$
DECLARE
    gen integer;
    tid integer;
    digest bytea := syncsvc.text_digest(query);
    deadline timestamptz;
    outcome text;
    reason text;
BEGIN
    SELECT g.generation_id INTO gen FROM syncsvc.search_generation(target) g;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no active generation', target
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT x.target_id INTO tid FROM syncsvc.generations x WHERE x.id = gen;
    -- The owner of syncsvc's tables may search everything; others need a grant (RLS shows a
    -- role its own grants only).
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c
                        WHERE c.oid = 'syncsvc.query_requests'::regclass), 'USAGE')
       AND NOT EXISTS (SELECT 1 FROM syncsvc.search_grants sg
                       JOIN pg_roles r ON r.rolname = sg.role_name
                       WHERE pg_has_role(r.oid, 'USAGE')
                         AND (sg.target_id IS NULL OR sg.target_id = tid)) THEN
        RAISE EXCEPTION 'role % may not search target % (syncsvc grant search % --target %)',
            current_user, target, current_user, target USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF query IS NULL OR NOT syncsvc.has_text(query) THEN
        RAISE EXCEPTION 'the search text is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF syncsvc.query_vector(target, query) IS NOT NULL THEN
        RETURN;  -- cached: no API call, no wait
    END IF;
    INSERT INTO syncsvc.query_requests AS r (generation_id, query)
    VALUES (gen, query)
    ON CONFLICT (generation_id, requested_by, text_hash) DO UPDATE
        SET query = EXCLUDED.query, state = 'pending', error = NULL, requested_at = now()
        WHERE r.state <> 'pending';
    PERFORM pg_notify('syncsvc_queries', gen::text);
    COMMIT;  -- the daemons must see the request
    deadline := clock_timestamp() + make_interval(secs => timeout_seconds);
    LOOP
        SELECT r.state, r.error INTO outcome, reason FROM syncsvc.query_requests r
        WHERE r.generation_id = gen AND r.requested_by = current_user AND r.text_hash = digest;
        EXIT WHEN outcome IS DISTINCT FROM 'pending';
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'no daemon embedded the query within % s (is ''syncsvc run'' running?)',
                timeout_seconds USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    IF outcome = 'refused' THEN
        RAISE EXCEPTION '%', reason USING ERRCODE = 'configuration_limit_exceeded';
    ELSIF outcome = 'failed' THEN
        RAISE EXCEPTION 'the query could not be embedded: %', reason;
    END IF;
END
$procedure$;

CREATE OR REPLACE FUNCTION syncsvc.query_request_key()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.query IS NULL THEN
            RAISE EXCEPTION 'a query request needs its text' USING ERRCODE = 'not_null_violation';
        END IF;
        NEW.text_hash := syncsvc.text_digest(NEW.query);
    ELSIF NEW.query IS NOT NULL AND syncsvc.text_digest(NEW.query) <> OLD.text_hash THEN
        RAISE EXCEPTION 'a query request''s text cannot change'
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        NEW.text_hash := OLD.text_hash;
    END IF;
    RETURN NEW;
END
$function$;
