"""Drift: capture never fails the application; pausing and resuming a target from SQL; one
definition of an empty row (``syncsvc.has_text``).

* ``syncsvc.capture_errors``: an append-only log a capture trigger writes when the tracked
  table no longer has the shape it was compiled for (a renamed or dropped column). The
  application's statement goes on; the daemon pauses the target with that reason and the rows
  are found again by the sweep after ``syncsvc target repair``. Append-only, so concurrent
  application transactions never wait on each other's row lock.
* ``syncsvc.pause_target(name, reason)`` / ``syncsvc.resume_target(name)``: the one
  implementation behind the CLI, Python and the admin page. Both notify the daemons.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- The liveness tags of the daemons connected now: each daemon's sessions carry
-- application_name 'syncsvc <tag>', and its queue holders end with ':<tag>/<round>'.
CREATE VIEW syncsvc.daemon_sessions AS
    SELECT DISTINCT substr(a.application_name, 9) AS tag
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.application_name LIKE 'syncsvc %';

-- The generation of a failed job is 'failed', not 'retired': nothing offers to promote it.
ALTER TABLE syncsvc.generations DROP CONSTRAINT generations_state_check,
    ADD CONSTRAINT generations_state_check
    CHECK (state IN ('building', 'active', 'retired', 'failed'));
UPDATE syncsvc.generations g SET state = 'failed'
WHERE g.state = 'retired' AND EXISTS (
    SELECT 1 FROM syncsvc.jobs j WHERE j.generation_id = g.id AND j.state = 'failed');

-- Which generation a failed row failed in: during a re-embed a row may fail only in the
-- generation being built, and must not look like a failure of the live one.
ALTER TABLE syncsvc.queue ADD COLUMN failed_generation integer;
CREATE OR REPLACE VIEW syncsvc.failures AS
    SELECT t.name AS target, q.pk, q.attempts, q.last_error, q.request_id, q.updated_at,
           q.failed_generation AS generation
    FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
    WHERE q.state = 'failed';

-- The one definition of "this row has text to embed", used by every path (worker, sweep,
-- coverage, jobs, status): some character that is not white space, a control or an invisible
-- format character (NBSP, zero-width space, BOM, soft hyphen, U+001F ...). Applied to the
-- embedded columns only, never to the template's literals.
CREATE FUNCTION syncsvc.has_text(fields text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN fields ~ '[^\u0001-\u0020\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8]';

-- An operator's pause survives daemon restarts; pauses syncsvc made itself are retried then.
ALTER TABLE syncsvc.targets ADD COLUMN paused_by_operator boolean NOT NULL DEFAULT false;

CREATE TABLE syncsvc.capture_errors (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target_id  integer NOT NULL REFERENCES syncsvc.targets (id) ON DELETE CASCADE,
    operation  text NOT NULL,
    error      text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION syncsvc.pause_target(target text, reason text DEFAULT 'paused by an operator')
    RETURNS void LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE syncsvc.targets SET paused_reason = reason, paused_at = now(), paused_by_operator = true
    WHERE name = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_notify('syncsvc_targets', (SELECT id::text FROM syncsvc.targets WHERE name = target));
END
$$;

CREATE FUNCTION syncsvc.resume_target(target text) RETURNS text
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    previous text;
    tid integer;
BEGIN
    SELECT id, paused_reason INTO tid, previous FROM syncsvc.targets WHERE name = target
        FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE syncsvc.targets SET paused_reason = NULL, paused_at = NULL, paused_by_operator = false
    WHERE id = tid;
    DELETE FROM syncsvc.capture_errors WHERE target_id = tid;
    -- Entries that waited out a backoff while the target was broken go again now.
    UPDATE syncsvc.queue SET next_attempt_at = now() WHERE target_id = tid AND state = 'pending';
    PERFORM pg_notify('syncsvc_targets', tid::text);
    RETURN previous;
END
$$;
"""

DOWNGRADE = r"""
DROP VIEW syncsvc.failures;
CREATE VIEW syncsvc.failures AS
    SELECT t.name AS target, q.pk, q.attempts, q.last_error, q.request_id, q.updated_at
    FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id
    WHERE q.state = 'failed';
ALTER TABLE syncsvc.queue DROP COLUMN failed_generation;
DROP FUNCTION syncsvc.has_text(text);
DROP VIEW syncsvc.daemon_sessions;
DROP FUNCTION syncsvc.resume_target(text);
DROP FUNCTION syncsvc.pause_target(text, text);
DROP TABLE syncsvc.capture_errors;
ALTER TABLE syncsvc.targets DROP COLUMN paused_by_operator;
UPDATE syncsvc.generations SET state = 'retired' WHERE state = 'failed';
ALTER TABLE syncsvc.generations DROP CONSTRAINT generations_state_check,
    ADD CONSTRAINT generations_state_check CHECK (state IN ('building', 'active', 'retired'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
