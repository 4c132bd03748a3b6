"""Generations and jobs you can trust: a ``cancelled`` generation state, a job's failed rows,
and ``syncsvc.promote(..., accept_failed)``.

* ``generations.state`` gains ``cancelled``: the generation of a cancelled job receives no
  writes and sends no request; it is dropped by ``syncsvc generation drop`` and finished by a
  new re-embed of the same space. Generations of jobs cancelled before this revision (left as
  ``retired``, never promoted) become ``cancelled``.
* ``jobs.failed_rows``: rows a finished job left failed for good; a job whose remaining rows
  are all failed completes with them counted here. ``syncsvc.job_status`` shows it.
* ``syncsvc.promote(target, generation, force, accept_failed)``: promoting a generation with
  failed rows needs ``accept_failed`` (or the daemon's ``jobs.promote_max_failed``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE syncsvc.generations DROP CONSTRAINT generations_state_check,
    ADD CONSTRAINT generations_state_check
    CHECK (state IN ('building', 'active', 'retired', 'failed', 'cancelled'));
UPDATE syncsvc.generations g SET state = 'cancelled'
WHERE g.state = 'retired' AND g.promoted_at IS NULL AND EXISTS (
    SELECT 1 FROM syncsvc.jobs j WHERE j.generation_id = g.id AND j.state = 'cancelled');

ALTER TABLE syncsvc.jobs ADD COLUMN failed_rows integer NOT NULL DEFAULT 0;

DROP VIEW syncsvc.job_status;
CREATE VIEW syncsvc.job_status AS
    SELECT j.*, t.name AS target, t.paused_reason AS target_paused, g.model, g.dimensions,
           g.provider, g.state AS generation_state
    FROM syncsvc.jobs j
    JOIN syncsvc.targets t ON t.id = j.target_id
    JOIN syncsvc.generations g ON g.id = j.generation_id;

DROP FUNCTION syncsvc.promote(text, integer, boolean);
CREATE FUNCTION syncsvc.promote(target text, generation integer, force boolean DEFAULT false,
                                accept_failed boolean DEFAULT false)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.generations g JOIN syncsvc.targets t
                   ON t.id = g.target_id WHERE t.name = $1 AND g.id = $2) THEN
        RAISE EXCEPTION 'target % has no generation %', $1, $2 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN syncsvc.file_request('promote', $1,
        jsonb_build_object('generation', $2, 'force', $3, 'accept_failed', $4));
END
$$;
REVOKE EXECUTE ON FUNCTION syncsvc.promote(text, integer, boolean, boolean) FROM PUBLIC;
"""

DOWNGRADE = r"""
DROP FUNCTION syncsvc.promote(text, integer, boolean, boolean);
CREATE FUNCTION syncsvc.promote(target text, generation integer, force boolean DEFAULT false)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.generations g JOIN syncsvc.targets t
                   ON t.id = g.target_id WHERE t.name = $1 AND g.id = $2) THEN
        RAISE EXCEPTION 'target % has no generation %', $1, $2 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN syncsvc.file_request('promote', $1,
                                jsonb_build_object('generation', $2, 'force', $3));
END
$$;
REVOKE EXECUTE ON FUNCTION syncsvc.promote(text, integer, boolean) FROM PUBLIC;

DROP VIEW syncsvc.job_status;
ALTER TABLE syncsvc.jobs DROP COLUMN failed_rows;
CREATE VIEW syncsvc.job_status AS
    SELECT j.*, t.name AS target, t.paused_reason AS target_paused, g.model, g.dimensions,
           g.provider, g.state AS generation_state
    FROM syncsvc.jobs j
    JOIN syncsvc.targets t ON t.id = j.target_id
    JOIN syncsvc.generations g ON g.id = j.generation_id;

UPDATE syncsvc.generations SET state = 'retired' WHERE state = 'cancelled';
ALTER TABLE syncsvc.generations DROP CONSTRAINT generations_state_check,
    ADD CONSTRAINT generations_state_check
    CHECK (state IN ('building', 'active', 'retired', 'failed'));
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
