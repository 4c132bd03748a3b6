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
