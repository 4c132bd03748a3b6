-- Who may do what: search grants and the definer-function audit.

-- name: grant_search --
SELECT syncsvc.grant_search(%(role)s, %(target)s, %(max_queries_per_minute)s,
                            %(max_query_tokens)s) AS tables;

-- name: revoke_search --
SELECT syncsvc.revoke_search(%(role)s, %(target)s);

-- name: target_grantees --
-- The roles whose search grants reach one target (granted on it, or on every target).
SELECT DISTINCT sg.role_name::text AS role FROM syncsvc.search_grants sg
WHERE sg.target_id = %(id)s OR sg.target_id IS NULL ORDER BY 1;

-- name: list_search_grants --
SELECT sg.role_name::text AS role, t.name AS target, sg.granted_by::text AS granted_by,
       sg.granted_at, sg.max_queries_per_minute, sg.max_query_tokens
FROM syncsvc.search_grants sg LEFT JOIN syncsvc.targets t ON t.id = sg.target_id
ORDER BY 1, 2 NULLS FIRST;

-- name: definer_functions --
-- Every SECURITY DEFINER function of syncsvc, whether PUBLIC may run it, and its settings.
SELECT p.oid::regprocedure::text AS function,
       coalesce(p.proacl IS NULL OR EXISTS (
           SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
       ), true) AS public_execute,
       coalesce(p.proconfig, '{}') AS config
FROM pg_proc p
WHERE p.pronamespace = 'syncsvc'::regnamespace AND p.prosecdef
ORDER BY 1;

-- name: can_write_cache --
SELECT has_table_privilege('syncsvc.query_cache', 'INSERT, UPDATE') AS ok;

-- name: function_acls --
-- Every function and procedure of schema syncsvc and whether PUBLIC may execute it.
SELECT p.oid::regprocedure::text AS function,
       coalesce(p.proacl IS NULL OR EXISTS (
           SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE'
       ), true) AS public_execute
FROM pg_proc p
WHERE p.pronamespace = 'syncsvc'::regnamespace
ORDER BY 1;
