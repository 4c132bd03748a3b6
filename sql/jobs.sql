-- Re-embedding jobs and scheduled runs. The job row is the truth: the cursor, the state and the
-- progress counters survive restarts and kill -9.

-- name: request_reembed --
SELECT syncsvc.request_reembed(
    %(target)s, %(model)s, %(dimensions)s, %(provider)s, %(auto_promote)s, %(space)s,
    %(max_queued)s, %(options)s) AS id;

-- name: list_jobs --
-- The view SQL users read (syncsvc.job_status).
SELECT * FROM syncsvc.job_status j
WHERE (%(id)s::integer IS NULL OR j.id = %(id)s)
  AND (%(open_only)s IS FALSE OR j.state IN ('pending', 'running', 'paused'))
ORDER BY j.id;

-- name: lock_job --
-- Whoever holds the rows feeds the job; other daemons (and a promote in progress) make it skip
-- this tick. Locking the target too keeps the order target → job used by promote and
-- request_reembed, so the two never deadlock. NO KEY UPDATE: the capture triggers' queue
-- inserts take KEY SHARE on the target row (foreign key) and must never wait for a job.
SELECT j.id FROM syncsvc.jobs j JOIN syncsvc.targets t ON t.id = j.target_id
WHERE j.id = %(id)s
FOR NO KEY UPDATE OF j, t SKIP LOCKED;

-- name: lock_job_target --
-- An admin's pause, resume or cancel locks the job's target first, then the job (lock_job_wait):
-- the order promote and request_reembed take, so a promote and a cancel take turns instead of
-- deadlocking, or a promote reading "building" just before a cancel commits.
SELECT t.id FROM syncsvc.targets t JOIN syncsvc.jobs j ON j.target_id = t.id
WHERE j.id = %(id)s FOR NO KEY UPDATE OF t;

-- name: lock_job_wait --
SELECT * FROM syncsvc.jobs WHERE id = %(id)s FOR NO KEY UPDATE;

-- name: forget_generation_failures --
-- Rows failed for good in a generation that is cancelled or dropped: that model's refusal says
-- nothing of the next re-embed (whose backfill would otherwise skip them and count them failed).
DELETE FROM syncsvc.queue WHERE state = 'failed' AND failed_generation = %(id)s;

-- name: workable_jobs --
SELECT id FROM syncsvc.jobs WHERE state IN ('pending', 'running') ORDER BY id;

-- name: set_state --
UPDATE syncsvc.jobs
SET state = %(state)s, error = %(error)s, updated_at = now(),
    finished_at = CASE WHEN %(state)s IN ('completed', 'cancelled', 'failed') THEN now() END
WHERE id = %(id)s;

-- name: start_job --
UPDATE syncsvc.jobs
SET state = 'running', total_rows = %(total_rows)s,
    price_per_million_tokens = %(price)s, started_at = coalesce(started_at, now()),
    progress_at = now(), error = NULL, updated_at = now()
WHERE id = %(id)s;

-- name: advance --
UPDATE syncsvc.jobs
SET cursor = %(cursor)s, cursor_inclusive = false, scan_done = %(scan_done)s,
    enqueued_rows = enqueued_rows + %(enqueued)s, updated_at = now()
WHERE id = %(id)s;

-- name: rescan --
UPDATE syncsvc.jobs
SET cursor = NULL, cursor_inclusive = false, scan_done = false, passes = passes + 1,
    updated_at = now()
WHERE id = %(id)s;

-- name: rewind --
-- After queued rows were given back (pause), the scan restarts at the first of them.
UPDATE syncsvc.jobs
SET cursor = %(cursor)s, cursor_inclusive = true, scan_done = false, updated_at = now()
WHERE id = %(id)s;

-- name: progress --
-- Rate is smoothed so ETA does not jump with every round. The total is counted again once the
-- scan is over (rows inserted or deleted meanwhile), so done never runs past it.
UPDATE syncsvc.jobs
SET done_rows = least(%(done)s, coalesce(%(total)s, total_rows, %(done)s)),
    total_rows = coalesce(%(total)s, total_rows),
    tokens = %(tokens)s,
    cost = %(tokens)s * price_per_million_tokens / 1e6,
    rate = CASE
        WHEN progress_at IS NULL OR now() <= progress_at THEN rate
        WHEN rate IS NULL THEN greatest(%(done)s - done_rows, 0)
                               / extract(epoch FROM now() - progress_at)
        ELSE 0.5 * rate + 0.5 * greatest(%(done)s - done_rows, 0)
                               / extract(epoch FROM now() - progress_at) END,
    error = %(error)s,
    progress_at = now(),
    updated_at = now()
WHERE id = %(id)s;

-- name: backfill_in_queue --
-- The job's share of the queue: its rows waiting or being embedded (not failed ones).
SELECT count(*) AS n FROM syncsvc.queue
WHERE target_id = %(target_id)s AND priority = %(priority)s AND state <> 'failed';

-- name: bulk_in_queue --
-- Sweep and backfill rows still to embed: a job is not complete while a bulk catch-up is
-- under way, even though those rows are on their way to the new generation too.
SELECT count(*) AS n FROM syncsvc.queue
WHERE target_id = %(target_id)s AND priority > 0 AND state <> 'failed';

-- name: target_in_queue --
SELECT count(*) FILTER (WHERE state <> 'failed') AS open,
       count(*) FILTER (WHERE state = 'failed') AS failed
FROM syncsvc.queue WHERE target_id = %(target_id)s;

-- name: set_generation_state --
UPDATE syncsvc.generations SET state = %(state)s WHERE id = %(id)s AND state <> 'active';

-- name: delete_generation --
DELETE FROM syncsvc.generations WHERE id = %(id)s AND state <> 'active';

-- name: rekey_generation --
UPDATE syncsvc.generations SET key = %(key)s, space = %(space)s WHERE id = %(id)s;

-- name: generation_by_key --
SELECT id FROM syncsvc.generations WHERE target_id = %(target_id)s AND key = %(key)s;

-- name: claim_schedule_run --
INSERT INTO syncsvc.schedule_runs (job, fire_time, daemon)
VALUES (%(job)s, %(fire_time)s, %(daemon)s)
ON CONFLICT (job, fire_time) DO NOTHING;

-- name: finish_schedule_run --
UPDATE syncsvc.schedule_runs SET finished_at = now(), error = %(error)s
WHERE job = %(job)s AND fire_time = %(fire_time)s;

-- name: prune_schedule_runs --
DELETE FROM syncsvc.schedule_runs WHERE job = %(job)s AND started_at < now() - interval '7 days';

-- name: lock_target --
-- Promotions, drops and job changes of one target take turns.
-- NO KEY UPDATE: application writes (queue inserts take KEY SHARE) go on meanwhile.
SELECT id FROM syncsvc.targets WHERE id = %(id)s FOR NO KEY UPDATE;

-- name: retire_generation --
UPDATE syncsvc.generations SET state = 'retired' WHERE id = %(id)s;

-- name: activate_generation --
UPDATE syncsvc.generations SET state = 'active', promoted_at = now() WHERE id = %(id)s;

-- name: complete_generation_jobs --
-- A promoted generation's open job has nothing left to do: live edits keep it current.
UPDATE syncsvc.jobs
SET state = 'completed', finished_at = coalesce(finished_at, now()), updated_at = now()
WHERE generation_id = %(generation_id)s AND state IN ('pending', 'running', 'paused');

-- name: held_by_dead --
-- Entries of a target held by a daemon with no session left (see queue.sql expire_leases):
-- its rows may still change the generation, so a job is not complete before they are taken.
SELECT count(*) AS n FROM syncsvc.queue
WHERE target_id = %(target_id)s AND state = 'in_flight'
  AND regexp_replace(split_part(worker, '/', 1), '^.*:', '')
      NOT IN (SELECT tag FROM syncsvc.daemon_sessions);

-- name: generation_state --
-- The worker's last check before sending a request for a generation that is not active.
SELECT state FROM syncsvc.generations WHERE id = %(id)s;

-- name: generation_state_lock --
-- Held until the vectors' write commits: a cancel (an UPDATE of this row) waits for a write
-- that saw the generation live, and a write after the cancel sees it cancelled.
SELECT state FROM syncsvc.generations WHERE id = %(id)s FOR SHARE;


-- name: finish_job --
-- Completion with exact figures, measured in the same transaction: done + failed = total.
UPDATE syncsvc.jobs
SET state = 'completed', done_rows = %(done)s, total_rows = %(total)s,
    failed_rows = %(failed)s, error = %(error)s, finished_at = now(), updated_at = now()
WHERE id = %(id)s;
