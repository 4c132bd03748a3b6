-- Reads and writes of syncsvc's own catalog: targets and generations.

-- name: list_targets --
-- capture read through to_jsonb: targets stay readable on the revision before 0017.
SELECT id, name, source_schema, source_table, pk_columns, pk_types, columns, template, metric,
       paused_reason, embed_labels, coalesce(to_jsonb(t) ->> 'capture', 'triggers') AS capture
FROM syncsvc.targets t
ORDER BY name;

-- name: running_target_ids --
-- What the claimer asks on every wake-up: the targets not paused, in list_targets' order.
SELECT id FROM syncsvc.targets WHERE paused_reason IS NULL ORDER BY name;

-- name: list_generations --
SELECT id, target_id, key, provider, space, model, dimensions, options, state, table_name
FROM syncsvc.generations
ORDER BY target_id, id;

-- name: insert_target --
INSERT INTO syncsvc.targets
    (name, source_schema, source_table, pk_columns, pk_types, columns, template, metric,
     embed_labels)
VALUES (%(name)s, %(schema)s, %(table)s, %(pk_columns)s, %(pk_types)s, %(columns)s,
        %(template)s, %(metric)s, %(embed_labels)s)
RETURNING id;

-- name: set_capture --
-- Only for capture = 'wal' (the column's default is triggers).
UPDATE syncsvc.targets SET capture = %(capture)s WHERE id = %(id)s;

-- name: insert_generation --
-- The vector table is named after the generation id, so take the id first.
WITH n AS (SELECT nextval(pg_get_serial_sequence('syncsvc.generations', 'id')) AS id)
INSERT INTO syncsvc.generations
    (id, target_id, key, provider, space, model, dimensions, options, state, table_name)
OVERRIDING SYSTEM VALUE
SELECT n.id, %(target_id)s, %(key)s, %(provider)s, %(space)s, %(model)s, %(dimensions)s,
       %(options)s, %(state)s, %(table_prefix)s || '_g' || n.id
FROM n
RETURNING id, table_name;

-- name: delete_target --
DELETE FROM syncsvc.targets WHERE id = %(id)s;

-- name: pause_target --
UPDATE syncsvc.targets SET paused_reason = %(reason)s, paused_at = now()
WHERE id = %(id)s AND paused_reason IS DISTINCT FROM %(reason)s;

-- name: resume_targets --
-- At daemon start: retry what syncsvc paused itself (a fixed key, a fixed table); an
-- operator's 'target pause' stays until 'target resume'.
UPDATE syncsvc.targets SET paused_reason = NULL, paused_at = NULL
WHERE paused_reason IS NOT NULL AND NOT paused_by_operator
RETURNING name;

-- name: find_table --
-- ``parent``: the table a partition or inheritance child belongs to (the root of its tree).
SELECT c.oid::regclass::text AS qualified, n.nspname AS schema, c.relname AS name, c.relkind,
       c.relispartition, syncsvc.qualified_name(c.oid) AS full_name,
       CASE WHEN c.relispartition THEN syncsvc.qualified_name(pg_partition_root(c.oid))
            ELSE (SELECT syncsvc.qualified_name(i.inhparent) FROM pg_inherits i
                  WHERE i.inhrelid = c.oid LIMIT 1) END AS parent,
       (SELECT syncsvc.qualified_name(i.inhrelid) FROM pg_inherits i
        WHERE i.inhparent = c.oid AND c.relkind = 'r' LIMIT 1) AS inheritor,
       (SELECT syncsvc.qualified_name(p.relid) FROM pg_partition_tree(c.oid) p
        JOIN pg_class f ON f.oid = p.relid WHERE f.relkind = 'f' LIMIT 1) AS foreign_partition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = coalesce(%(schema)s, current_schema()) AND c.relname = %(table)s;

-- name: table_columns --
SELECT a.attname AS name,
       format_type(a.atttypid, a.atttypmod) AS type,
       t.typname IN ('text', 'varchar', 'bpchar', 'citext', 'name') AS textlike,
       -- PostgreSQL 18's VIRTUAL generated columns read as NULL in transition tables.
       a.attgenerated::text = 'v' AS virtual,
       a.attgenerated::text <> '' AS generated
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %(oid)s::regclass AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum;

-- name: primary_key --
SELECT array_agg(a.attname ORDER BY k.ord) AS columns
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %(oid)s::regclass AND i.indisprimary
GROUP BY i.indexrelid;

-- name: unique_keys --
-- Unique, non-partial, expression-free indexes over NOT NULL columns can serve as a row key.
SELECT array_agg(a.attname ORDER BY k.ord) AS columns
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = %(oid)s::regclass AND i.indisunique AND i.indpred IS NULL
GROUP BY i.indexrelid
HAVING bool_and(a.attnotnull);

-- name: capture_errors --
-- The newest capture error of each running target (paused ones already say why).
SELECT DISTINCT ON (e.target_id) e.target_id, t.name, e.operation, e.error
FROM syncsvc.capture_errors e JOIN syncsvc.targets t ON t.id = e.target_id
WHERE t.paused_reason IS NULL
ORDER BY e.target_id, e.id DESC;

-- name: publish_model --
-- What a configured provider offers, for syncsvc.check_model (SQL callers' validation).
INSERT INTO syncsvc.provider_models AS p
    (provider, model, dimensions, default_dimensions, sparse)
VALUES (%(provider)s, %(model)s, %(dimensions)s, %(default_dimensions)s, %(sparse)s)
ON CONFLICT (provider, model) DO UPDATE
    SET dimensions = excluded.dimensions, default_dimensions = excluded.default_dimensions,
        sparse = excluded.sparse, published_at = now();

-- name: unpublish_models --
-- Models a provider no longer offers (its profile changed): not offered from SQL either.
DELETE FROM syncsvc.provider_models
WHERE provider = %(provider)s AND NOT model = ANY (%(models)s);

-- name: claim_request --
-- Held until the action and its outcome commit together; another daemon skips it meanwhile.
SELECT id, action, target, args FROM syncsvc.requests
WHERE state = 'pending'
ORDER BY id
LIMIT 1
FOR UPDATE SKIP LOCKED;

-- name: request_done --
UPDATE syncsvc.requests SET state = 'done', result = %(result)s, finished_at = now()
WHERE id = %(id)s;

-- name: request_failed --
UPDATE syncsvc.requests SET state = 'failed', error = %(error)s, finished_at = now()
WHERE id = %(id)s;

-- name: partitions --
-- Every partition of a table, at any depth (none for a plain table).
SELECT p.relid::oid::bigint AS relid, syncsvc.qualified_name(p.relid) AS qualified,
       n.nspname AS schema,
       c.relname AS name, c.relkind IN ('r', 'p') AS capturable
FROM (SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) AS root) r
CROSS JOIN LATERAL pg_partition_tree(r.root) p
JOIN pg_class c ON c.oid = p.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE p.relid <> r.root
ORDER BY p.level, p.relid;

-- name: captured_relations --
-- Tables other than the target's own carrying its capture triggers (its partitions).
SELECT n.nspname AS schema, c.relname AS name
FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE g.tgname = %(trigger)s
  AND g.tgrelid IS DISTINCT FROM to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text));

-- name: partition_changes --
SELECT x.target_id, x.relid::bigint AS relid, x.name, x.change, t.name AS target,
       syncsvc.describe_partition_change(x.name, x.change) AS note,
       n.nspname AS rel_schema, c.relname AS rel_name
FROM syncsvc.partition_changes() x JOIN syncsvc.targets t ON t.id = x.target_id
LEFT JOIN pg_class c ON c.oid = x.relid LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY x.target_id, x.name;

-- name: set_partitions --
UPDATE syncsvc.targets SET partitions = %(tree)s WHERE id = %(id)s;

-- name: set_capture_drift --
UPDATE syncsvc.targets SET capture_drift = %(drift)s WHERE id = %(id)s;

-- name: clear_capture_drift --
UPDATE syncsvc.targets SET capture_drift = NULL WHERE id = %(id)s AND capture_drift = %(drift)s;

-- name: capture_drift --
SELECT target, drift FROM syncsvc.capture_drift WHERE drift IS NOT NULL;

-- name: clear_stale_drift --
-- A note no daemon is working on any more: none holds the target's reconcile lock.
UPDATE syncsvc.targets t SET capture_drift = NULL
WHERE t.capture_drift IS NOT NULL AND NOT t.id = ANY (%(ids)s::integer[])
  AND NOT EXISTS (SELECT 1 FROM pg_locks l
                  WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database
                                                                  WHERE datname = current_database())
                    AND l.classid = %(lock)s::bigint::oid AND l.objid = t.id::oid
                    AND l.objsubid = 2);

-- name: relation_oid --
-- NULL when the relation does not exist (db/common.relation_oid); names as written, unquoted.
SELECT to_regclass(format('%%I.%%I', %(schema)s::text, %(name)s::text))::oid AS oid;

-- name: pause_by_name --
-- The operator's pause (drift.pause); NO_DATA_FOUND when no target has that name.
SELECT syncsvc.pause_target(%(name)s, %(reason)s);

-- name: resume_by_name --
-- NO_DATA_FOUND when no target has that name; previous: the reason it was paused for.
SELECT syncsvc.resume_target(%(name)s) AS previous;

-- name: try_reconcile_lock --
-- Session lock: one daemon at a time reconciles a target's partitions.
SELECT pg_try_advisory_lock(%(lock)s, %(target_id)s) AS mine;

-- name: reconcile_unlock --
SELECT pg_advisory_unlock(%(lock)s, %(target_id)s);

-- name: create_vector_table --
SELECT syncsvc.create_vector_table(%(generation_id)s);

-- name: apply_search_grants --
SELECT syncsvc.apply_search_grants(%(target_id)s);
