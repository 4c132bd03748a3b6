-- Search roles: the grants recorded in syncsvc.search_grants and their re-application.
--
-- Applied by migrate after the Alembic revisions, on every migrate, in one transaction:
-- each definition is CREATE OR REPLACE and is the only one at head. A changed signature
-- needs a revision that drops the old one.

CREATE OR REPLACE FUNCTION syncsvc.apply_search_grants(target integer DEFAULT NULL::integer)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    r record;
    granted integer := 0;
BEGIN
    FOR r IN SELECT DISTINCT role_name FROM syncsvc.search_grants
             WHERE target IS NULL OR target_id IS NULL OR target_id = target LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA syncsvc TO %I', r.role_name);
        -- The catalog tells a search which generation table to read; the caches give repeated
        -- queries their vectors. Cache rows are written by syncsvc only, so nobody can plant a
        -- vector for another user's query. Grants and requests: a role's own rows only (RLS).
        EXECUTE format('GRANT SELECT ON syncsvc.targets, syncsvc.generations, '
                       'syncsvc.query_cache, syncsvc.sparse_query_cache, '
                       'syncsvc.search_grants TO %I', r.role_name);
        -- Only what filing a request takes: its key is derived, its answer the daemon's.
        EXECUTE format('GRANT SELECT, INSERT (generation_id, query), '
                       'UPDATE (query, state, error, requested_at) '
                       'ON syncsvc.query_requests TO %I', r.role_name);
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
$function$;

CREATE OR REPLACE FUNCTION syncsvc.grant_search(grantee name, target text DEFAULT NULL::text, max_queries_per_minute integer DEFAULT 30, max_query_tokens integer DEFAULT 256)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_variable
DECLARE
    tid integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grantee) THEN
        RAISE EXCEPTION 'role % does not exist', grantee USING ERRCODE = 'undefined_object';
    END IF;
    IF coalesce(max_queries_per_minute, -1) < 0 OR coalesce(max_query_tokens, 0) < 1 THEN
        RAISE EXCEPTION 'max_queries_per_minute must be >= 0 and max_query_tokens >= 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF target IS NOT NULL THEN
        SELECT t.id INTO tid FROM syncsvc.targets t WHERE t.name = target;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    INSERT INTO syncsvc.search_grants AS sg
        (role_name, target_id, max_queries_per_minute, max_query_tokens)
    VALUES (grantee, tid, max_queries_per_minute, max_query_tokens)
    ON CONFLICT (role_name, coalesce(target_id, 0)) DO UPDATE
        SET max_queries_per_minute = EXCLUDED.max_queries_per_minute,
            max_query_tokens = EXCLUDED.max_query_tokens;
    RETURN syncsvc.apply_search_grants(tid);
END
$function$;

CREATE OR REPLACE FUNCTION syncsvc.revoke_search(grantee name, target text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
                       'syncsvc.query_cache, syncsvc.sparse_query_cache, '
                       'syncsvc.search_grants FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON syncsvc.query_requests FROM %I', grantee);
        EXECUTE format('REVOKE USAGE ON SCHEMA syncsvc FROM %I', grantee);
    END IF;
END
$function$;
