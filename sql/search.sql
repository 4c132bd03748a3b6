-- Similarity search: strategy, indexes, the query-vector cache, and the search statements.
-- The per-target SQL lives in the functions of migration 0002 (syncsvc.search_by_vector...).

-- name: vector_strategy --
SELECT kind, index_expr, opclass, ann_expr, candidates_factor, min_candidates
FROM syncsvc.vector_strategy(%(dimensions)s, %(metric)s);

-- name: index_info --
SELECT ic.relname AS name, i.indisvalid AS valid, pg_get_indexdef(i.indexrelid) AS definition,
       pg_relation_size(i.indexrelid) AS bytes
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = tc.relnamespace
WHERE n.nspname = 'syncsvc' AND tc.relname = %(table)s AND ic.relname = %(name)s;

-- name: table_estimates --
-- reltuples is -1 until the table is first vacuumed or analyzed: callers then count.
SELECT (SELECT reltuples::bigint FROM pg_class
        WHERE oid = format('%%I.%%I', %(source_schema)s::text, %(source_table)s::text)::regclass) AS source,
       (SELECT reltuples::bigint FROM pg_class
        WHERE oid = format('syncsvc.%%I', %(vector_table)s::text)::regclass) AS vectors;

-- name: cache_get --
UPDATE syncsvc.query_cache SET hits = hits + 1, last_used_at = now()
WHERE generation_id = %(generation_id)s AND query_hash = %(query_hash)s
RETURNING embedding, tokens;

-- name: cache_peek --
-- The read-only form of cache_get (a hot standby cannot count hits).
SELECT embedding, tokens FROM syncsvc.query_cache
WHERE generation_id = %(generation_id)s AND query_hash = %(query_hash)s;

-- name: cache_put --
INSERT INTO syncsvc.query_cache (generation_id, query_hash, embedding, tokens)
VALUES (%(generation_id)s, %(query_hash)s, %(embedding)b, %(tokens)s)
ON CONFLICT (generation_id, query_hash) DO UPDATE SET last_used_at = now();

-- name: cache_prune --
DELETE FROM syncsvc.query_cache
WHERE last_used_at < now() - make_interval(secs => %(seconds)s);

-- name: cache_stats --
SELECT generation_id, count(*) AS entries, sum(hits)::bigint AS hits, max(last_used_at) AS last_used_at
FROM syncsvc.query_cache GROUP BY generation_id ORDER BY generation_id;

-- name: sparse_cache_get --
UPDATE syncsvc.sparse_query_cache SET last_used_at = now()
WHERE generation_id = %(generation_id)s AND query_hash = %(query_hash)s
RETURNING sparse;

-- name: sparse_cache_peek --
SELECT sparse FROM syncsvc.sparse_query_cache
WHERE generation_id = %(generation_id)s AND query_hash = %(query_hash)s;

-- name: sparse_cache_put --
INSERT INTO syncsvc.sparse_query_cache (generation_id, query_hash, sparse)
VALUES (%(generation_id)s, %(query_hash)s, %(sparse)b)
ON CONFLICT (generation_id, query_hash) DO UPDATE SET last_used_at = now();

-- name: sparse_cache_prune --
DELETE FROM syncsvc.sparse_query_cache
WHERE last_used_at < now() - make_interval(secs => %(seconds)s);

-- name: pending_queries --
-- With the grant (and its limits) that covers each request's role and target, held by the role
-- itself or a role it belongs to: a grant for the target itself wins over one for every
-- target. The owner of syncsvc's tables is unlimited. A role dropped since it filed has none.
SELECT r.generation_id, r.requested_by::text AS requested_by, r.text_hash, r.query,
       coalesce(pg_has_role(rr.oid, c.relowner, 'USAGE'), false) AS owner,
       l.max_queries_per_minute, l.max_query_tokens
FROM syncsvc.query_requests r
JOIN syncsvc.generations g ON g.id = r.generation_id
CROSS JOIN (SELECT relowner FROM pg_class WHERE oid = 'syncsvc.query_requests'::regclass) c
LEFT JOIN pg_roles rr ON rr.rolname = r.requested_by
LEFT JOIN LATERAL (
    SELECT sg.max_queries_per_minute, sg.max_query_tokens
    FROM syncsvc.search_grants sg JOIN pg_roles gr ON gr.rolname = sg.role_name
    WHERE pg_has_role(rr.oid, gr.oid, 'USAGE')
      AND (sg.target_id IS NULL OR sg.target_id = g.target_id)
    ORDER BY sg.target_id IS NULL, sg.role_name <> r.requested_by,
             sg.max_queries_per_minute DESC
    LIMIT 1
) l ON true
WHERE r.state = 'pending' AND r.query IS NOT NULL
ORDER BY r.requested_at
LIMIT %(limit)s;

-- name: lock_query_budget --
-- One role's budget checks are serialised (in the caller's transaction), so concurrent
-- daemons never overspend it.
SELECT pg_advisory_xact_lock(hashtext('syncsvc.query_budget'), hashtext(%(requested_by)s));

-- name: query_budget_used --
-- Requests of a role counted in the last minute, and the seconds until the oldest leaves it.
SELECT count(*) AS used,
       coalesce(greatest(0, extract(epoch FROM min(billed_at) + interval '1 minute' - now())),
                0)::float8 AS retry_seconds
FROM syncsvc.query_requests
WHERE requested_by = %(requested_by)s AND billed_at > now() - interval '1 minute'
  -- A request another daemon is answering too counts once.
  AND NOT (generation_id = %(generation_id)s AND text_hash = %(text_hash)s);

-- name: query_billed --
UPDATE syncsvc.query_requests SET billed_at = now()
WHERE generation_id = %(generation_id)s AND requested_by = %(requested_by)s
  AND text_hash = %(text_hash)s;

-- name: query_unbilled --
UPDATE syncsvc.query_requests SET billed_at = NULL
WHERE generation_id = %(generation_id)s AND requested_by = %(requested_by)s
  AND text_hash = %(text_hash)s;

-- name: query_done --
-- The text is no longer needed once answered (text_hash still finds the cached vector).
UPDATE syncsvc.query_requests
SET state = 'done', query_hash = %(query_hash)s, error = NULL, done_at = now(),
    tokens = %(tokens)s, query = CASE WHEN %(keep_text)s THEN query END
WHERE generation_id = %(generation_id)s AND requested_by = %(requested_by)s
  AND text_hash = %(text_hash)s;

-- name: query_failed --
UPDATE syncsvc.query_requests
SET state = %(state)s, error = %(error)s, done_at = now(),
    query = CASE WHEN %(keep_text)s THEN query END
WHERE generation_id = %(generation_id)s AND requested_by = %(requested_by)s
  AND text_hash = %(text_hash)s;

-- name: prune_query_requests --
-- Query text kept no longer than the retention; answered rows (hashes only) for a day;
-- requests nobody answered for an hour are dropped (their caller stopped waiting long ago).
WITH erased AS (
    UPDATE syncsvc.query_requests SET query = NULL
    WHERE query IS NOT NULL AND state <> 'pending'
      AND done_at < now() - make_interval(secs => %(text_seconds)s)
    RETURNING 1
), dropped AS (
    DELETE FROM syncsvc.query_requests
    WHERE (state <> 'pending' AND done_at < now() - interval '1 day')
       OR (state = 'pending' AND requested_at < now() - interval '1 hour')
    RETURNING 1
)
SELECT (SELECT count(*) FROM erased) + (SELECT count(*) FROM dropped) AS pruned;
