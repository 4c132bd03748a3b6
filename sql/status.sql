-- name: target_status --
-- With why the vectors and the source disagree in a way the daemon is fixing right now.
SELECT s.*, d.drift, t.capture, t.paused_reason IS NOT NULL AS paused
FROM syncsvc.status s LEFT JOIN syncsvc.capture_drift d ON d.target = s.target
LEFT JOIN syncsvc.targets t ON t.name = s.target
ORDER BY s.target;

-- name: unpromoted --
-- Generations whose job completed a while ago but that were neither promoted nor dropped:
-- every live edit is still embedded for them too.
SELECT t.name AS target, g.id AS generation_id, g.table_name,
       extract(epoch FROM now() - j.finished_at)::float8 AS idle_seconds,
       j.price_per_million_tokens
FROM syncsvc.generations g
JOIN syncsvc.targets t ON t.id = g.target_id
JOIN syncsvc.jobs j ON j.generation_id = g.id AND j.state = 'completed'
WHERE g.state = 'building' AND j.finished_at < now() - make_interval(secs => %(grace)s)
ORDER BY t.name, g.id;

-- name: waiting --
-- Rows still to embed, every target: queued (not failed) plus captured and not yet queued.
SELECT (SELECT count(*) FROM syncsvc.queue WHERE state <> 'failed')
     + (SELECT coalesce(sum(jsonb_array_length(pks)), 0) FROM syncsvc.inbox) AS n;

-- name: queue_depth --
-- Per target, rows still to embed (the admin page's queue chart): queued but not failed, plus
-- captured and not yet queued; the status view's pending + in flight, without its counts of
-- source and vector tables (this runs every few seconds). Whether it is paused, so a stall is
-- judged only over time the target could run.
SELECT t.name AS target,
       (SELECT count(*) FROM syncsvc.queue q WHERE q.target_id = t.id AND q.state <> 'failed')
     + (SELECT coalesce(sum(jsonb_array_length(i.pks)), 0) FROM syncsvc.inbox i
        WHERE i.target_id = t.id) AS depth,
       t.paused_reason IS NOT NULL AS paused
FROM syncsvc.targets t ORDER BY t.name;

-- name: open_job_progress --
-- Rows done by each job that should be moving (progress over time: is it stalled?); a paused
-- one is left out, so a job paused within the window is not judged on it.
SELECT id, done_rows FROM syncsvc.jobs WHERE state IN ('pending', 'running');
