-- Operations: the shared API rate budget, daemon heartbeats, and what the admin page shows.
-- statement_timestamp() is one instant per statement, the same clock for every daemon.

-- name: reserve --
-- GCRA reservation: this request's slot starts at max(tat, now); tat moves one cost ahead.
-- The caller sleeps until its slot, so N daemons together pace to the account's rate.
INSERT INTO syncsvc.rate_budget AS b (account, rpm, tpm, request_tat, token_tat, reserved)
VALUES (%(account)s, %(rpm)s, %(tpm)s,
        statement_timestamp() + make_interval(secs => %(request_cost)s),
        statement_timestamp() + make_interval(secs => %(token_cost)s),
        1)
ON CONFLICT (account) DO UPDATE SET
    request_tat = greatest(b.request_tat, statement_timestamp())
        + make_interval(secs => %(request_cost)s),
    token_tat = greatest(b.token_tat, statement_timestamp())
        + make_interval(secs => %(token_cost)s),
    rpm = excluded.rpm,
    tpm = excluded.tpm,
    reserved = b.reserved + 1,
    updated_at = statement_timestamp()
RETURNING greatest(
    0,
    extract(epoch FROM request_tat - statement_timestamp()) - %(request_cost)s,
    extract(epoch FROM token_tat - statement_timestamp()) - %(token_cost)s
)::float8 AS wait_seconds;

-- name: throttle --
-- A 429 seen by one daemon pauses every daemon of the account until the server's Retry-After.
UPDATE syncsvc.rate_budget
SET request_tat = greatest(request_tat, statement_timestamp() + make_interval(secs => %(pause)s)),
    throttled = throttled + 1,
    updated_at = statement_timestamp()
WHERE account = %(account)s;

-- name: budgets --
SELECT account, rpm, tpm, reserved, throttled,
       greatest(0, extract(epoch FROM request_tat - statement_timestamp()))::float8
           AS booked_ahead_seconds
FROM syncsvc.rate_budget
ORDER BY account;

-- name: try_lead --
SELECT pg_try_advisory_lock(%(key)s) AS leader;

-- name: heartbeat --
INSERT INTO syncsvc.daemons (id, host, pid, leader)
VALUES (%(id)s, %(host)s, %(pid)s, %(leader)s)
ON CONFLICT (id) DO UPDATE SET seen_at = now(), leader = excluded.leader;

-- name: forget_daemon --
DELETE FROM syncsvc.daemons WHERE id = %(id)s OR seen_at < now() - interval '1 day';

-- name: list_daemons --
SELECT id, host, pid, leader, started_at, seen_at,
       extract(epoch FROM now() - seen_at)::float8 AS seen_seconds_ago
FROM syncsvc.daemons
ORDER BY started_at;

-- name: list_failed --
SELECT t.name AS target, q.failed_generation AS generation, q.pk, q.attempts, q.last_error,
       q.request_id, q.updated_at
FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
WHERE q.state = 'failed'
ORDER BY q.updated_at DESC
LIMIT %(limit)s;

-- name: ping --
SELECT 1 AS ok;

-- name: failed_keys --
-- The rows 'failed retry' is about to queue again (locked until it has).
SELECT q.target_id, q.pk FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
WHERE q.state = 'failed' AND (%(target)s::text IS NULL OR t.name = %(target)s)
FOR UPDATE OF q;

-- name: retry_outcome --
-- Where the retried rows stand: gone from the queue (embedded), pending or in flight, or
-- failed again (with the API's message).
SELECT CASE WHEN q.pk IS NULL THEN 'embedded' ELSE q.state END AS state,
       CASE WHEN q.state = 'failed' THEN q.last_error END AS last_error,
       count(*) AS n
FROM unnest(%(target_ids)s::integer[], %(pks)s::jsonb[]) AS k(target_id, pk)
LEFT JOIN syncsvc.queue q ON q.target_id = k.target_id AND q.pk = k.pk
GROUP BY 1, 2;

-- name: daemon_running --
SELECT EXISTS (SELECT 1 FROM syncsvc.daemon_sessions) AS running;

-- name: notify --
-- Wakes listeners (db/common.notify); delivered at commit, so a rolled-back change wakes no one.
SELECT pg_notify(%(channel)s, %(payload)s);

-- name: set_lock_timeout --
-- For the rest of this transaction only (db/common.set_lock_timeout).
SELECT set_config('lock_timeout', %(timeout)s, true);

-- name: set_maintenance_work_mem --
-- For this session (an index build); reset_maintenance_work_mem undoes it.
SELECT set_config('maintenance_work_mem', %(value)s, false);

-- name: reset_maintenance_work_mem --
RESET maintenance_work_mem;

-- name: vector_version --
SELECT extversion FROM pg_extension WHERE extname = 'vector';

-- name: vector_available --
SELECT 1 FROM pg_available_extensions WHERE name = 'vector';

-- name: create_vector_extension --
CREATE EXTENSION IF NOT EXISTS vector;

-- name: schema_state --
-- Whether schema syncsvc exists, this role may use it, and it has been migrated.
SELECT n.oid IS NOT NULL AS schema,
       coalesce(has_schema_privilege(n.oid, 'USAGE'), false) AS usage,
       EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = n.oid
               AND c.relname = 'targets') AS migrated
FROM (SELECT 1) one LEFT JOIN pg_namespace n ON n.nspname = 'syncsvc';

-- name: paused_targets --
SELECT name, paused_reason FROM syncsvc.targets
WHERE paused_reason IS NOT NULL ORDER BY name;

-- name: outstanding_work --
-- What 'syncsvc run --until-idle' waits for: live queue entries, inbox rows, unfinished jobs.
-- A paused target's work is not counted: nothing will do it until someone resumes the target.
SELECT (SELECT count(*) FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
         WHERE q.state <> 'failed' AND t.paused_reason IS NULL)
     + (SELECT count(*) FROM syncsvc.inbox i JOIN syncsvc.targets t ON t.id = i.target_id
         WHERE t.paused_reason IS NULL)
     + (SELECT count(*) FROM syncsvc.jobs j JOIN syncsvc.targets t ON t.id = j.target_id
         WHERE j.state IN ('pending', 'running') AND t.paused_reason IS NULL) AS n;

-- name: paused_work --
-- Paused targets that still hold work, for the last word of 'syncsvc run --until-idle'.
SELECT t.name, t.paused_reason,
       (SELECT count(*) FROM syncsvc.queue q
         WHERE q.target_id = t.id AND q.state <> 'failed') AS queued
FROM syncsvc.targets t
WHERE t.paused_reason IS NOT NULL
  AND (EXISTS (SELECT FROM syncsvc.queue q WHERE q.target_id = t.id AND q.state <> 'failed')
       OR EXISTS (SELECT FROM syncsvc.inbox i WHERE i.target_id = t.id)
       OR EXISTS (SELECT FROM syncsvc.jobs j
                   WHERE j.target_id = t.id AND j.state IN ('pending', 'running')))
ORDER BY t.name;

-- name: alembic_revisions --
SELECT version_num FROM syncsvc.alembic_version;
