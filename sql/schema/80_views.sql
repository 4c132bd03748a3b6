-- Views over syncsvc's tables, after the functions they call. CREATE OR REPLACE VIEW may only
-- add columns at the end: a revision that changes a view's columns (or a table a view expands
-- with *) drops the view first, and this file creates it again.

-- Failed items stay in the queue (one entry per row); this view is their dead-letter listing,
-- with the generation a row failed in (during a re-embed, only the one being built).
CREATE OR REPLACE VIEW syncsvc.failures AS
    SELECT t.name AS target, q.pk, q.attempts, q.last_error, q.request_id, q.updated_at,
           q.failed_generation AS generation
    FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
    WHERE q.state = 'failed';

-- The liveness tags of the daemons connected now: each daemon's sessions carry
-- application_name 'syncsvc <tag>', and its queue holders end with ':<tag>/<round>'.
CREATE OR REPLACE VIEW syncsvc.daemon_sessions AS
    SELECT DISTINCT substr(a.application_name, 9) AS tag
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.application_name LIKE 'syncsvc %';

CREATE OR REPLACE VIEW syncsvc.generation_status AS SELECT * FROM syncsvc.generation_stats();

CREATE OR REPLACE VIEW syncsvc.status AS SELECT * FROM syncsvc.target_stats();

CREATE OR REPLACE VIEW syncsvc.job_status AS
    SELECT j.*, t.name AS target, t.paused_reason AS target_paused, g.model, g.dimensions,
           g.provider, g.state AS generation_state
    FROM syncsvc.jobs j
    JOIN syncsvc.targets t ON t.id = j.target_id
    JOIN syncsvc.generations g ON g.id = j.generation_id;

-- Why a target's vectors and its source disagree in a way the daemon is about to fix: what
-- the daemon says it is doing (or why it cannot yet), else what the catalog shows.
CREATE OR REPLACE VIEW syncsvc.capture_drift AS
    WITH c AS (
        SELECT c.target_id,
               string_agg(syncsvc.describe_partition_change(c.name, c.change), '; '
                          ORDER BY c.name) AS note
        FROM syncsvc.partition_changes() c
        GROUP BY c.target_id
    )
    SELECT t.name AS target, coalesce(t.capture_drift, c.note) AS drift
    FROM syncsvc.targets t LEFT JOIN c ON c.target_id = t.id;
