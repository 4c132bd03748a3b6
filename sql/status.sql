-- name: queue_summary --
SELECT target_id,
       count(*) FILTER (WHERE state = 'pending') AS pending,
       count(*) FILTER (WHERE state = 'in_flight') AS in_flight,
       count(*) FILTER (WHERE state = 'failed') AS failed,
       extract(epoch FROM now() - min(enqueued_at) FILTER (WHERE state <> 'failed'))
           AS oldest_pending_seconds
FROM syncsvc.queue
GROUP BY target_id;

-- name: inbox_summary --
-- Captured but not yet expanded into the queue: pending as far as users are concerned.
SELECT target_id, sum(jsonb_array_length(pks))::bigint AS pending,
       extract(epoch FROM now() - min(created_at)) AS oldest_seconds
FROM syncsvc.inbox
GROUP BY target_id;

-- name: failed_by_generation --
SELECT target_id, failed_generation AS generation_id, count(*) AS failed
FROM syncsvc.queue WHERE state = 'failed'
GROUP BY target_id, failed_generation;

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
