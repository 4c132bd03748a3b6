-- Capture from the WAL (capture/slots, capture/wal): syncsvc's publication and the database's
-- logical replication slot. The publication is per database, the slot's name carries the
-- database's oid (slots are per server).

-- name: prerequisites --
-- What capture = 'wal' needs of the server and of the role syncsvc runs as.
SELECT current_setting('wal_level') AS wal_level,
       current_setting('max_replication_slots')::integer AS max_slots,
       (SELECT count(*) FROM pg_replication_slots)::integer AS slots_used,
       current_setting('max_slot_wal_keep_size') AS keep_size,
       (SELECT r.rolreplication OR r.rolsuper FROM pg_roles r WHERE r.rolname = current_user)
           AS replication,
       current_user AS role,
       current_setting('server_encoding') AS encoding,
       EXISTS (SELECT 1 FROM pg_replication_slots s WHERE s.slot_name = %(slot)s) AS has_slot;

-- name: slot_name --
SELECT 'syncsvc_' || d.oid AS slot FROM pg_database d WHERE d.datname = current_database();

-- name: slot --
-- The slot's state: NULL when it does not exist. retained: WAL the server keeps for it (from
-- restart_lsn); lag: WAL written since the last change syncsvc stored (from confirmed_flush).
SELECT s.wal_status,
       to_jsonb(s) ->> 'invalidation_reason' AS invalidation_reason,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint AS retained_bytes,
       pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
       s.active
FROM pg_replication_slots s
WHERE s.slot_name = %(slot)s AND s.database = current_database();

-- name: create_slot --
SELECT pg_create_logical_replication_slot(%(slot)s, 'pgoutput') IS NOT NULL AS created;

-- name: drop_slot --
SELECT pg_drop_replication_slot(%(slot)s);

-- name: has_publication --
SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'syncsvc') AS present;

-- name: create_publication --
-- Changes of a partition are published as changes of its partitioned table (the target's).
CREATE PUBLICATION syncsvc WITH (publish_via_partition_root = true);

-- name: drop_publication --
DROP PUBLICATION IF EXISTS syncsvc;

-- name: published --
-- Whether a table is in syncsvc's publication.
SELECT EXISTS (SELECT 1 FROM pg_publication_tables p
               WHERE p.pubname = 'syncsvc' AND p.schemaname = %(schema)s
                 AND p.tablename = %(table)s) AS present;

-- name: wal_targets --
-- WAL targets on one table (other than one being removed), and in the whole database.
SELECT count(*) FILTER (WHERE t.source_schema = %(schema)s AND t.source_table = %(table)s)
           ::integer AS on_table,
       count(*)::integer AS total
FROM syncsvc.targets t
WHERE t.capture = 'wal' AND t.id <> %(id)s;

-- name: replica_identity --
-- The columns a DELETE's old key carries: the primary key (default), an index, all (full);
-- and whether the table's writes are in the WAL at all (not UNLOGGED).
SELECT c.relreplident AS identity, c.relpersistence AS persistence,
       CASE c.relreplident
           WHEN 'd' THEN (SELECT array_agg(a.attname::text ORDER BY a.attname)
                          FROM pg_index i JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                          WHERE i.indrelid = c.oid AND i.indisprimary)
           WHEN 'i' THEN (SELECT array_agg(a.attname::text ORDER BY a.attname)
                          FROM pg_index i JOIN pg_attribute a
                            ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                          WHERE i.indrelid = c.oid AND i.indisreplident)
       END AS key_columns
FROM pg_class c WHERE c.oid = %(oid)s::regclass;

-- name: peek --
-- Whole transactions committed up to upto (and at least one beyond changes), not consumed:
-- the slot moves only when their keys are stored (advance).
SELECT data FROM pg_logical_slot_peek_binary_changes(
    %(slot)s, %(upto)s::pg_lsn, %(changes)s,
    'proto_version', '1', 'publication_names', 'syncsvc');

-- name: current_lsn --
-- Flushed, not inserted: decoding reads flushed WAL only, and advancing past a commit not yet
-- flushed (synchronous_commit = off) would skip it.
SELECT pg_current_wal_flush_lsn()::text AS lsn;

-- name: advance --
-- Never backwards (another daemon may have read further meanwhile).
SELECT pg_replication_slot_advance(s.slot_name, greatest(%(lsn)s::pg_lsn, s.confirmed_flush_lsn))
FROM pg_replication_slots s WHERE s.slot_name = %(slot)s;

-- name: try_reader_lock --
-- Session lock: one daemon at a time reads the slot; it goes with the session (kill -9).
SELECT pg_try_advisory_lock(%(lock)s) AS mine;

-- name: reader_unlock --
SELECT pg_advisory_unlock(%(lock)s);

-- name: resume_recovered --
-- Targets syncsvc paused for a lost slot, once the recovery sweep has run.
UPDATE syncsvc.targets SET paused_reason = NULL, paused_at = NULL
WHERE id = ANY (%(ids)s::integer[]) AND paused_reason = %(reason)s AND NOT paused_by_operator;

-- name: identity_lost --
-- Of the given tables, those on which PostgreSQL refuses (or would refuse, once published)
-- UPDATE and DELETE: the table, or a partition of it, has no usable replica identity (the DBA
-- dropped its key, or set NOTHING). Published or not, so a table taken out of the publication
-- goes back only once every partition has its key again.
SELECT DISTINCT n.nspname AS schema, c.relname AS table
FROM unnest(%(schemas)s::text[], %(tables)s::text[]) AS wanted(schema, name)
JOIN pg_namespace n ON n.nspname = wanted.schema
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = wanted.name
-- pg_partition_tree gives no row for a table that is not partitioned: it is its own leaf.
LEFT JOIN LATERAL pg_partition_tree(c.oid) tree ON true
JOIN pg_class leaf ON leaf.oid = coalesce(tree.relid, c.oid)
WHERE coalesce(tree.isleaf, true)
  AND NOT (leaf.relreplident = 'f'
           OR (leaf.relreplident = 'd'
               AND EXISTS (SELECT 1 FROM pg_index i
                           WHERE i.indrelid = leaf.oid AND i.indisprimary))
           OR (leaf.relreplident = 'i'
               AND EXISTS (SELECT 1 FROM pg_index i
                           WHERE i.indrelid = leaf.oid AND i.indisreplident)));

-- name: pause_for_identity --
-- Pause a running target whose table lost its key; one paused meanwhile (an operator, drift)
-- keeps its own reason.
UPDATE syncsvc.targets SET paused_reason = %(reason)s, paused_at = now()
WHERE id = %(id)s AND paused_reason IS NULL;

-- name: resume_identity --
-- A target syncsvc paused because its table lost its key, once it is published and swept again.
UPDATE syncsvc.targets SET paused_reason = NULL, paused_at = NULL
WHERE id = %(id)s AND paused_reason LIKE %(prefix)s || '%%' AND NOT paused_by_operator;

-- name: wal_target_held --
-- The target still exists and still reads the WAL; held until the caller commits, so a
-- removal running now cannot leave its table published behind it.
SELECT true AS present FROM syncsvc.targets
WHERE id = %(id)s AND capture = 'wal' FOR SHARE;
