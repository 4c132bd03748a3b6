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
SELECT generation_id, text_hash, query FROM syncsvc.query_requests
WHERE state = 'pending'
ORDER BY requested_at
LIMIT %(limit)s;

-- name: query_done --
UPDATE syncsvc.query_requests
SET state = 'done', query_hash = %(query_hash)s, error = NULL, done_at = now()
WHERE generation_id = %(generation_id)s AND text_hash = %(text_hash)s;

-- name: query_failed --
UPDATE syncsvc.query_requests SET state = 'failed', error = %(error)s, done_at = now()
WHERE generation_id = %(generation_id)s AND text_hash = %(text_hash)s;
