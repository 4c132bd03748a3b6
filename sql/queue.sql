-- The durable work queue: one entry per (target, row key). NOTIFY only wakes the daemon;
-- these statements are the truth.

-- name: expand_inbox --
-- Move captured keys from the inbox into the queue, one entry per row. An entry already queued
-- is bumped (seq + 1) so a worker holding it knows the row changed while it was in flight.
-- An entry a sweep or backfill round holds is taken back instead (pending, no holder): that
-- round's result for the old text is refused by the hash guard anyway, and the edit need not
-- wait for the whole round. The round's completion then matches nothing, as its holder is gone.
-- Callers hold an advisory lock so two daemons never upsert overlapping keys at once.
WITH batch AS (
    DELETE FROM syncsvc.inbox
    WHERE id IN (SELECT id FROM syncsvc.inbox ORDER BY id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
    RETURNING target_id, pks, created_at
), keys AS (
    -- The join drops keys a writer captured while their target was being removed.
    SELECT DISTINCT ON (b.target_id, e.pk) b.target_id, e.pk, b.created_at
    FROM batch b JOIN syncsvc.targets t ON t.id = b.target_id,
         jsonb_array_elements(b.pks) AS e(pk)
    ORDER BY b.target_id, e.pk, b.created_at
)
INSERT INTO syncsvc.queue AS q (target_id, pk, enqueued_at)
SELECT target_id, pk, created_at FROM keys
ON CONFLICT (target_id, pk) DO UPDATE SET
    seq = q.seq + 1,
    state = CASE WHEN q.state = 'in_flight' AND q.priority = 0 THEN 'in_flight' ELSE 'pending' END,
    worker = CASE WHEN q.state = 'in_flight' AND q.priority = 0 THEN q.worker END,
    lease_until = CASE WHEN q.state = 'in_flight' AND q.priority = 0 THEN q.lease_until END,
    attempts = 0,
    priority = 0,
    next_attempt_at = now(),
    enqueued_at = CASE WHEN q.state = 'failed' THEN EXCLUDED.enqueued_at
                       ELSE least(q.enqueued_at, EXCLUDED.enqueued_at) END,
    updated_at = now();

-- name: inbox_waiting --
SELECT EXISTS (SELECT 1 FROM syncsvc.inbox) AS waiting;

-- name: expire_leases --
-- Work held by a daemon that died (kill -9, lost connection) becomes claimable again, at once
-- when no session of its daemon is connected any more (each daemon's sessions carry
-- 'syncsvc <tag>' as application_name, the tag ending its holder id; its lease keeper holds
-- one open on a thread of its own). A live daemon's claims are never taken, however late its
-- lease: a lapsed lease only means its process is slow (a busy machine), and taking its rows
-- would pay for them twice. The grace covers a claim committed just before its daemon's first
-- session shows. The restart grace covers a server restart, which cut every daemon's sessions
-- at once: live daemons reconnect within seconds, and until then a claim made before the
-- restart is freed only by a lapsed lease.
UPDATE syncsvc.queue
SET state = 'pending', worker = NULL, lease_until = NULL, updated_at = now()
WHERE state = 'in_flight'
  AND regexp_replace(split_part(worker, '/', 1), '^.*:', '')
      NOT IN (SELECT tag FROM syncsvc.daemon_sessions)
  AND (lease_until < now()
       OR (updated_at < now() - make_interval(secs => %(grace_seconds)s)
           AND (updated_at > pg_postmaster_start_time()
                OR pg_postmaster_start_time()
                   < now() - make_interval(secs => %(restart_grace_seconds)s))));

-- name: claim --
-- A round holds one priority only: a live edit is not held up by the backfill rows that would
-- otherwise fill the rest of its round. max_priority (NULL: any) lets the round slot kept for
-- live edits take nothing else. A target paused since the caller listed the running ones is
-- left out here too: its released rows must not be claimed again by a stale list.
-- Within the priority, targets share the round: each target's due rows are ranked by due time
-- (queue_ready_by_target, one short index scan per target) and the round takes every target's
-- first row, then every target's second, and so on. A target with 50,000 rows queued leaves a
-- neighbour's live edit to the next round, not to the end of its backlog.
-- The running targets and the round's priority are computed once, as InitPlans: right after a
-- sweep fills the queue its statistics still say "empty", and a join would rescan the queue
-- once per queued row (1.8 s for 2,000 rows). The lowest priority due is the first entry of
-- queue_ready that qualifies, not an aggregate over every pending row.
WITH running AS MATERIALIZED (
    SELECT t.id
    FROM syncsvc.targets t
    WHERE t.id = ANY(%(target_ids)s) AND t.paused_reason IS NULL
), ready AS MATERIALIZED (
    SELECT q.priority
    FROM syncsvc.queue q
    WHERE q.state = 'pending'
      AND q.next_attempt_at <= now()
      AND q.target_id = ANY(ARRAY(SELECT id FROM running))
      AND (%(max_priority)s::integer IS NULL OR q.priority <= %(max_priority)s::integer)
    ORDER BY q.priority
    LIMIT 1
), fair AS MATERIALIZED (
    SELECT f.row_id, f.turn, f.next_attempt_at
    FROM running r
    CROSS JOIN LATERAL (
        SELECT q.ctid AS row_id, q.next_attempt_at,
               row_number() OVER (ORDER BY q.next_attempt_at) AS turn
        FROM syncsvc.queue q
        WHERE q.target_id = r.id
          AND q.state = 'pending'
          AND q.priority = (SELECT priority FROM ready)
          AND q.next_attempt_at <= now()
        ORDER BY q.next_attempt_at
        LIMIT %(limit)s
    ) f
), candidates AS (
    SELECT q.target_id, q.pk
    -- Locked by physical row id: one heap fetch per candidate. An entry another claim took
    -- meanwhile has moved (new row version) or is locked, and is skipped either way.
    FROM fair f
    JOIN syncsvc.queue q ON q.ctid = f.row_id
    WHERE q.state = 'pending'
    ORDER BY f.turn, f.next_attempt_at
    LIMIT %(limit)s
    FOR UPDATE OF q SKIP LOCKED
)
UPDATE syncsvc.queue q
SET state = 'in_flight',
    worker = %(worker)s,
    lease_until = now() + make_interval(secs => %(lease_seconds)s),
    updated_at = now()
FROM candidates c
WHERE q.target_id = c.target_id AND q.pk = c.pk
RETURNING q.target_id, q.pk, q.seq, q.attempts, q.enqueued_at, q.priority;

-- name: renew_leases --
-- Never waits for a row lock: an entry locked now is being completed (or written) by its own
-- round, and the next renewal catches whatever is left. Waiting could deadlock with a round's
-- completion, which locks the same rows in another order.
UPDATE syncsvc.queue q
SET lease_until = now() + make_interval(secs => %(lease_seconds)s)
FROM (
    SELECT target_id, pk FROM syncsvc.queue
    WHERE worker = ANY(%(holders)s) AND state = 'in_flight'
    FOR UPDATE SKIP LOCKED
) held
WHERE q.target_id = held.target_id AND q.pk = held.pk;

-- name: release_ended --
-- Entries still held by rounds of this daemon that are over (a round whose release was lost
-- with the database connection, a claim whose answer was lost): pending again at once, no
-- attempt spent. Named by holder, never "every holder but the rounds in progress": a round
-- that claims while this runs would be robbed of its entries and they would be paid twice.
UPDATE syncsvc.queue
SET state = 'pending', worker = NULL, lease_until = NULL, updated_at = now()
WHERE worker = ANY(%(holders)s) AND state = 'in_flight';

-- name: complete --
-- Done with these entries, unless the row was edited meanwhile (seq moved): then the entry
-- goes back to pending so the newer text is embedded too. ``holder`` is the claiming round.
WITH done AS (
    SELECT * FROM unnest(%(target_ids)s::integer[], %(pks)s::jsonb[], %(seqs)s::bigint[],
                         %(holders)s::text[])
        AS d(target_id, pk, seq, holder)
), deleted AS (
    DELETE FROM syncsvc.queue q
    USING done d
    WHERE q.target_id = d.target_id AND q.pk = d.pk AND q.seq = d.seq
      AND q.worker = d.holder AND q.state = 'in_flight'
    RETURNING q.target_id, q.pk
)
UPDATE syncsvc.queue q
SET state = 'pending', worker = NULL, lease_until = NULL, next_attempt_at = now(),
    updated_at = now()
FROM done d
WHERE q.target_id = d.target_id AND q.pk = d.pk
  AND q.worker = d.holder AND q.state = 'in_flight'
  AND NOT EXISTS (SELECT 1 FROM deleted x WHERE x.target_id = d.target_id AND x.pk = d.pk);

-- name: fail --
-- Retries are data: attempts, next attempt time and the last error. A permanent error or the
-- last allowed attempt leaves the entry visibly failed. An entry edited meanwhile starts over.
UPDATE syncsvc.queue q
SET attempts = CASE WHEN q.seq = d.seq THEN q.attempts + 1 ELSE 0 END,
    state = CASE
        WHEN q.seq <> d.seq THEN 'pending'
        WHEN d.permanent OR q.attempts + 1 >= %(max_attempts)s THEN 'failed'
        ELSE 'pending' END,
    next_attempt_at = CASE WHEN q.seq = d.seq
        THEN now() + make_interval(secs => d.delay) ELSE now() END,
    last_error = d.error,
    request_id = d.request_id,
    failed_generation = d.generation,
    worker = NULL,
    lease_until = NULL,
    updated_at = now()
FROM unnest(%(target_ids)s::integer[], %(pks)s::jsonb[], %(seqs)s::bigint[], %(errors)s::text[],
            %(request_ids)s::text[], %(permanent)s::boolean[], %(delays)s::float8[],
            %(holders)s::text[], %(generations)s::integer[])
    AS d(target_id, pk, seq, error, request_id, permanent, delay, holder, generation)
WHERE q.target_id = d.target_id AND q.pk = d.pk
  AND q.worker = d.holder AND q.state = 'in_flight'
RETURNING q.target_id, q.pk, q.state;

-- name: release --
-- Give entries back untouched (shutdown, paused target): no attempt is spent.
UPDATE syncsvc.queue q
SET state = 'pending', worker = NULL, lease_until = NULL, updated_at = now()
FROM unnest(%(target_ids)s::integer[], %(pks)s::jsonb[], %(holders)s::text[])
    AS d(target_id, pk, holder)
WHERE q.target_id = d.target_id AND q.pk = d.pk
  AND q.worker = d.holder AND q.state = 'in_flight';

-- name: release_all --
UPDATE syncsvc.queue
SET state = 'pending', worker = NULL, lease_until = NULL, updated_at = now()
WHERE starts_with(worker, %(worker)s || '/') AND state = 'in_flight';

-- name: list_failed --
-- The view SQL users read (syncsvc.failures).
SELECT f.target, f.generation, f.pk, f.attempts, f.last_error, f.request_id, f.updated_at
FROM syncsvc.failures f
WHERE %(target)s::text IS NULL OR f.target = %(target)s
ORDER BY f.updated_at
LIMIT %(limit)s;

-- name: retry_failed --
SELECT syncsvc.retry_failed(%(target)s) AS retried;

-- name: try_expand_lock --
-- Transaction lock: one daemon at a time expands the inbox; the others go on claiming.
SELECT pg_try_advisory_xact_lock(%(lock)s) AS locked;
