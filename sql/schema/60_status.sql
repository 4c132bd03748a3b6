-- Status: per target, per generation, and the partitions the capture has not caught up with.
--
-- Applied by migrate after the Alembic revisions, on every migrate, in one transaction:
-- each definition is CREATE OR REPLACE and is the only one at head. A changed signature
-- needs a revision that drops the old one.

-- Per generation: rows embedded (first chunk), rows embedded in the last minute, rows failed
-- in it. A vector table that cannot be read is reported, not an error for every target.
CREATE OR REPLACE FUNCTION syncsvc.generation_stats()
 RETURNS TABLE(target text, generation_id integer, state text, provider text, model text, dimensions integer, embedded bigint, last_minute bigint, failed bigint, problem text)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT t.name, x.* FROM syncsvc.generations x
             JOIN syncsvc.targets t ON t.id = x.target_id ORDER BY t.name, x.id LOOP
        target := g.name; generation_id := g.id; state := g.state; provider := g.provider;
        model := g.model; dimensions := g.dimensions; problem := NULL;
        BEGIN
            EXECUTE format('SELECT count(*), count(*) FILTER (WHERE embedded_at > now() - '
                           'interval ''1 minute'') FROM syncsvc.%I WHERE chunk = 0', g.table_name)
                INTO embedded, last_minute;
        EXCEPTION WHEN OTHERS THEN
            embedded := 0;
            last_minute := 0;
            problem := 'vector table unreadable: ' || SQLERRM;
        END;
        SELECT count(*) INTO failed FROM syncsvc.queue q
        WHERE q.target_id = g.target_id AND q.state = 'failed' AND q.failed_generation = g.id;
        RETURN NEXT;
    END LOOP;
END
$function$;

-- One row per target: source rows, embedded rows of the active generation, the backlog
-- (captured and queued), failures of the searched generation, the rate over the last minute
-- (vectors written in every live generation) and the time the backlog takes at that rate,
-- and why it is paused.
CREATE OR REPLACE FUNCTION syncsvc.target_stats()
 RETURNS TABLE(target text, source_table text, rows bigint, embedded bigint, pending bigint, in_flight bigint, failed bigint, oldest_pending_seconds double precision, rows_per_second double precision, eta_seconds double precision, active_generation integer, model text, dimensions integer, paused_reason text, generations jsonb)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    t syncsvc.targets;
    gens syncsvc.generation_status[];
    a record;
    problem text;
    queued_age float8;
    captured_age float8;
    captured bigint;
BEGIN
    -- Each vector table is counted once, whatever the number of targets.
    SELECT array_agg(s) INTO gens FROM syncsvc.generation_stats() s;
    FOR t IN SELECT * FROM syncsvc.targets ORDER BY name LOOP
        target := t.name;
        source_table := t.source_schema || '.' || t.source_table;
        problem := NULL;
        BEGIN
            EXECUTE format('SELECT count(*) FROM %I.%I', t.source_schema, t.source_table)
                INTO rows;
        EXCEPTION WHEN OTHERS THEN
            rows := 0;
            problem := format('cannot read %s: %s (fix the table, or ''syncsvc target repair %s'')',
                              source_table, SQLERRM, t.name);
        END;
        SELECT s.generation_id, s.model, s.dimensions, s.embedded INTO a
        FROM unnest(gens) s WHERE s.target = t.name AND s.state = 'active';
        active_generation := a.generation_id;
        model := a.model;
        dimensions := a.dimensions;
        embedded := coalesce(a.embedded, 0);
        problem := coalesce(problem, (SELECT s.problem FROM unnest(gens) s
                                      WHERE s.target = t.name AND s.problem IS NOT NULL
                                      ORDER BY s.generation_id LIMIT 1));
        SELECT count(*) FILTER (WHERE q.state = 'pending'),
               count(*) FILTER (WHERE q.state = 'in_flight'),
               -- A row failing only in a generation being built counts on that generation.
               count(*) FILTER (WHERE q.state = 'failed' AND (q.failed_generation IS NULL
                                OR q.failed_generation = a.generation_id)),
               extract(epoch FROM now() - min(q.enqueued_at) FILTER (WHERE q.state <> 'failed'))
        INTO pending, in_flight, failed, queued_age
        FROM syncsvc.queue q WHERE q.target_id = t.id;
        SELECT coalesce(sum(jsonb_array_length(i.pks)), 0), extract(epoch FROM now() - min(i.created_at))
        INTO captured, captured_age
        FROM syncsvc.inbox i WHERE i.target_id = t.id;
        pending := pending + captured;
        oldest_pending_seconds := greatest(queued_age, captured_age);
        rows_per_second := coalesce((SELECT sum(s.last_minute) FROM unnest(gens) s
                                     WHERE s.target = t.name
                                       AND s.state IN ('active', 'building')), 0) / 60.0;
        -- Unknown (NULL) when rows lack a vector and nothing is queued for them: 0 would say
        -- they are done.
        eta_seconds := CASE WHEN pending + in_flight = 0 AND embedded >= rows THEN 0
                            WHEN rows_per_second > 0 AND pending + in_flight > 0
                                THEN (pending + in_flight) / rows_per_second
                       END;
        paused_reason := coalesce(t.paused_reason, problem);
        -- The per-generation figures too, so one read of the view counts each table once.
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', s.generation_id, 'state', s.state, 'provider', s.provider,
                   'model', s.model, 'dimensions', s.dimensions, 'embedded', s.embedded,
                   'failed', s.failed) ORDER BY s.generation_id), '[]')
        INTO generations FROM unnest(gens) s WHERE s.target = t.name;
        RETURN NEXT;
    END LOOP;
END
$function$;

-- Per target, each partition whose capture does not match the tree:
--   added     in the tree (created or attached), without the capture triggers
--   detached  carries the triggers, or was reconciled, but is no longer in the tree
--   dropped   was reconciled and no longer exists
--   foreign   a foreign-table partition: statement triggers cannot capture writes naming it
-- 'added' and 'foreign' of a partition already reconciled are not changes: a foreign partition
-- is reported once, then left to the periodic sweep.
CREATE OR REPLACE FUNCTION syncsvc.partition_changes()
 RETURNS TABLE(target_id integer, relid oid, name text, change text)
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    WITH t0 AS (
        SELECT t.id, t.partitions, t.capture,
               to_regclass(format('%I.%I', t.source_schema, t.source_table)) AS root
        FROM syncsvc.targets t
    ), t AS (
        -- A table renamed or dropped is the drift machinery's (the target pauses), not this.
        SELECT * FROM t0 WHERE root IS NOT NULL
    ), tree AS (
        SELECT t.id, p.relid, c.relkind
        FROM t CROSS JOIN LATERAL pg_partition_tree(t.root) p
        JOIN pg_class c ON c.oid = p.relid
        WHERE p.relid <> t.root
    ), triggered AS (
        SELECT t.id, g.tgrelid AS relid
        FROM t JOIN pg_trigger g ON g.tgname = 'syncsvc_' || t.id || '_ins'
        WHERE g.tgrelid IS DISTINCT FROM t.root::oid AND t.capture = 'triggers'
    ), known AS (
        SELECT t.id, k::oid AS relid FROM t CROSS JOIN LATERAL jsonb_object_keys(t.partitions) k
    )
    -- Added: without the capture triggers; for WAL capture (the publication covers the whole
    -- tree) not in the recorded tree: its rows came by ATTACH, which the WAL does not carry.
    SELECT x.id, x.relid, syncsvc.qualified_name(x.relid), 'added' FROM tree x JOIN t ON t.id = x.id
    WHERE x.relkind IN ('r', 'p')
      AND CASE WHEN t.capture = 'triggers'
               THEN NOT EXISTS (SELECT 1 FROM triggered g WHERE g.id = x.id AND g.relid = x.relid)
               ELSE NOT EXISTS (SELECT 1 FROM known k WHERE k.id = x.id AND k.relid = x.relid)
          END
    UNION ALL
    SELECT x.id, x.relid, syncsvc.qualified_name(x.relid), 'foreign' FROM tree x
    WHERE x.relkind = 'f'
      AND NOT EXISTS (SELECT 1 FROM known k WHERE k.id = x.id AND k.relid = x.relid)
    UNION ALL
    SELECT g.id, g.relid, syncsvc.qualified_name(g.relid), 'detached'
    FROM (SELECT id, relid FROM triggered UNION SELECT id, relid FROM known) g
    WHERE EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = g.relid)
      AND NOT EXISTS (SELECT 1 FROM tree x WHERE x.id = g.id AND x.relid = g.relid)
    UNION ALL
    SELECT k.id, k.relid, t.partitions ->> k.relid::text, 'dropped'
    FROM known k JOIN t ON t.id = k.id
    WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = k.relid)
$function$;

-- The words for one partition change: status, the admin page and the daemon's log say this.
CREATE OR REPLACE FUNCTION syncsvc.describe_partition_change(name text, change text) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    RETURN CASE change
        WHEN 'added' THEN format('partition %s attached; sweeping', name)
        WHEN 'detached' THEN format('partition %s detached; removing its vectors', name)
        WHEN 'dropped' THEN format('partition %s dropped; removing its vectors', name)
        ELSE format('partition %s is a foreign table: writes naming it are found by the '
                    'periodic sweep only', name)
    END;
