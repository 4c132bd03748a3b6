"""``syncsvc.request_reembed`` carries the active generation's options (sparse, instruct) over.

A re-embed used to create its generation with no options, so a target with DashScope sparse
vectors lost them (and hybrid search its sparse half) on the new model. The function gains an
``options`` argument; left NULL, the active generation's options are kept. The daemon validates
them against the new provider when it adopts the job.

Revision ID: 0006
Revises: 0003
Create Date: 2026-11-22
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = "0005"

DROP_OLD = """
DROP FUNCTION syncsvc.request_reembed(text, text, integer, text, boolean, text, integer);
"""

UPGRADE = r"""
-- Start building a new generation of a target beside its active one. The daemon validates the
-- model against its provider profile when it adopts the job (and fails it with a reason if
-- the model or dimensions are not offered).
CREATE FUNCTION syncsvc.request_reembed(
    target       text,
    model        text,
    dimensions   integer,
    provider     text DEFAULT NULL,
    auto_promote boolean DEFAULT false,
    space        text DEFAULT NULL,
    max_queued   integer DEFAULT NULL,
    options      jsonb DEFAULT NULL
) RETURNS integer
    LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    t        syncsvc.targets;
    active   syncsvc.generations;
    existing syncsvc.generations;
    open_job integer;
    v_provider text;
    v_space  text;
    v_key    text;
    v_options jsonb;
    gen_id   integer;
    tbl      text;
    job_id   integer;
BEGIN
    -- Serialises concurrent requests for one target; NO KEY UPDATE lets application writes
    -- (whose queue inserts take KEY SHARE on the target) go on meanwhile.
    SELECT * INTO t FROM syncsvc.targets WHERE name = request_reembed.target FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no target named %', request_reembed.target
            USING HINT = 'see syncsvc target list', ERRCODE = 'undefined_object';
    END IF;
    IF request_reembed.dimensions IS NULL OR request_reembed.dimensions < 1 THEN
        RAISE EXCEPTION 'dimensions must be a positive integer' USING ERRCODE = 'check_violation';
    END IF;
    SELECT j.id INTO open_job FROM syncsvc.jobs j
    WHERE j.target_id = t.id AND j.state IN ('pending', 'running', 'paused');
    IF FOUND THEN
        RAISE EXCEPTION 'target % already has re-embedding job %', t.name, open_job
            USING HINT = 'cancel it first: syncsvc jobs cancel ' || open_job,
                  ERRCODE = 'unique_violation';
    END IF;
    SELECT * INTO active FROM syncsvc.generations g WHERE g.target_id = t.id AND g.state = 'active';
    v_provider := coalesce(request_reembed.provider, active.provider, 'local-hash');
    v_space := coalesce(
        request_reembed.space,
        (SELECT g.space FROM syncsvc.generations g
         WHERE g.provider = v_provider AND g.model = request_reembed.model
         ORDER BY g.id DESC LIMIT 1),
        (SELECT g.space FROM syncsvc.generations g WHERE g.model = request_reembed.model
         ORDER BY g.id DESC LIMIT 1),
        request_reembed.model);
    -- Options that shape the vector space (sparse output, a query instruction) carry over from
    -- the active generation unless given.
    v_options := coalesce(request_reembed.options, active.options, '{}'::jsonb);
    -- Mirrors syncsvc.models.generation_key for empty options; with options the text differs
    -- from Python's canonical JSON and the daemon rekeys the generation when it adopts the job.
    v_key := left(encode(sha256(convert_to(format(
        '{"dimensions":%s,"options":%s,"space":%s}',
        request_reembed.dimensions,
        CASE WHEN v_options = '{}'::jsonb THEN '{}' ELSE v_options::text END,
        to_json(v_space)::text),
        'UTF8')), 'hex'), 16);
    SELECT * INTO existing FROM syncsvc.generations g
    WHERE g.target_id = t.id
      AND (g.key = v_key OR (g.space = v_space AND g.dimensions = request_reembed.dimensions
                             AND g.options = v_options));
    IF FOUND AND existing.state = 'active' THEN
        RAISE EXCEPTION 'target % already uses % with % dimensions (generation %)',
            t.name, request_reembed.model, request_reembed.dimensions, existing.id
            USING ERRCODE = 'unique_violation';
    ELSIF FOUND THEN
        -- A retired (or finished but unpromoted) generation is brought up to date, not rebuilt:
        -- the backfill only enqueues rows whose vector there is missing or stale.
        UPDATE syncsvc.generations SET state = 'building' WHERE id = existing.id;
        gen_id := existing.id;
    ELSE
        gen_id := nextval(pg_get_serial_sequence('syncsvc.generations', 'id'));
        tbl := t.name || '_g' || gen_id;
        INSERT INTO syncsvc.generations
            (id, target_id, key, provider, space, model, dimensions, options, state, table_name)
        OVERRIDING SYSTEM VALUE
        VALUES (gen_id, t.id, v_key, v_provider, v_space, request_reembed.model,
                request_reembed.dimensions, v_options, 'building', tbl);
        PERFORM syncsvc.create_vector_table(gen_id);
    END IF;
    INSERT INTO syncsvc.jobs (target_id, generation_id, auto_promote, max_queued)
    VALUES (t.id, gen_id, coalesce(request_reembed.auto_promote, false),
            request_reembed.max_queued)
    RETURNING id INTO job_id;
    PERFORM pg_notify('syncsvc_wakeup', 'job:' || job_id);
    RETURN job_id;
END
$fn$;
COMMENT ON FUNCTION syncsvc.request_reembed(text, text, integer, text, boolean, text, integer, jsonb) IS
    'syncsvc: start re-embedding a target into a new generation; returns the job id';
"""

DROP_NEW = """
DROP FUNCTION syncsvc.request_reembed(text, text, integer, text, boolean, text, integer, jsonb);
"""

# The 0003 version, restored on downgrade (a migration freezes the function it installs).
DOWNGRADE = r"""
-- Start building a new generation of a target beside its active one. The daemon validates the
-- model against its provider profile when it adopts the job (and fails it with a reason if
-- the model or dimensions are not offered).
CREATE FUNCTION syncsvc.request_reembed(
    target       text,
    model        text,
    dimensions   integer,
    provider     text DEFAULT NULL,
    auto_promote boolean DEFAULT false,
    space        text DEFAULT NULL,
    max_queued   integer DEFAULT NULL
) RETURNS integer
    LANGUAGE plpgsql AS $fn$
#variable_conflict use_column
DECLARE
    t        syncsvc.targets;
    active   syncsvc.generations;
    existing syncsvc.generations;
    open_job integer;
    v_provider text;
    v_space  text;
    v_key    text;
    gen_id   integer;
    tbl      text;
    job_id   integer;
BEGIN
    -- Serialises concurrent requests for one target; NO KEY UPDATE lets application writes
    -- (whose queue inserts take KEY SHARE on the target) go on meanwhile.
    SELECT * INTO t FROM syncsvc.targets WHERE name = request_reembed.target FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no target named %', request_reembed.target
            USING HINT = 'see syncsvc target list', ERRCODE = 'undefined_object';
    END IF;
    IF request_reembed.dimensions IS NULL OR request_reembed.dimensions < 1 THEN
        RAISE EXCEPTION 'dimensions must be a positive integer' USING ERRCODE = 'check_violation';
    END IF;
    SELECT j.id INTO open_job FROM syncsvc.jobs j
    WHERE j.target_id = t.id AND j.state IN ('pending', 'running', 'paused');
    IF FOUND THEN
        RAISE EXCEPTION 'target % already has re-embedding job %', t.name, open_job
            USING HINT = 'cancel it first: syncsvc jobs cancel ' || open_job,
                  ERRCODE = 'unique_violation';
    END IF;
    SELECT * INTO active FROM syncsvc.generations g WHERE g.target_id = t.id AND g.state = 'active';
    v_provider := coalesce(request_reembed.provider, active.provider, 'local-hash');
    v_space := coalesce(
        request_reembed.space,
        (SELECT g.space FROM syncsvc.generations g
         WHERE g.provider = v_provider AND g.model = request_reembed.model
         ORDER BY g.id DESC LIMIT 1),
        (SELECT g.space FROM syncsvc.generations g WHERE g.model = request_reembed.model
         ORDER BY g.id DESC LIMIT 1),
        request_reembed.model);
    -- Mirrors syncsvc.models.generation_key for empty options (the daemon re-checks it).
    v_key := left(encode(sha256(convert_to(format(
        '{"dimensions":%s,"options":{},"space":%s}',
        request_reembed.dimensions, to_json(v_space)::text),
        'UTF8')), 'hex'), 16);
    SELECT * INTO existing FROM syncsvc.generations g WHERE g.target_id = t.id AND g.key = v_key;
    IF FOUND AND existing.state = 'active' THEN
        RAISE EXCEPTION 'target % already uses % with % dimensions (generation %)',
            t.name, request_reembed.model, request_reembed.dimensions, existing.id
            USING ERRCODE = 'unique_violation';
    ELSIF FOUND THEN
        -- A retired (or finished but unpromoted) generation is brought up to date, not rebuilt:
        -- the backfill only enqueues rows whose vector there is missing or stale.
        UPDATE syncsvc.generations SET state = 'building' WHERE id = existing.id;
        gen_id := existing.id;
    ELSE
        gen_id := nextval(pg_get_serial_sequence('syncsvc.generations', 'id'));
        tbl := t.name || '_g' || gen_id;
        INSERT INTO syncsvc.generations
            (id, target_id, key, provider, space, model, dimensions, options, state, table_name)
        OVERRIDING SYSTEM VALUE
        VALUES (gen_id, t.id, v_key, v_provider, v_space, request_reembed.model,
                request_reembed.dimensions, '{}', 'building', tbl);
        PERFORM syncsvc.create_vector_table(gen_id);
    END IF;
    INSERT INTO syncsvc.jobs (target_id, generation_id, auto_promote, max_queued)
    VALUES (t.id, gen_id, coalesce(request_reembed.auto_promote, false),
            request_reembed.max_queued)
    RETURNING id INTO job_id;
    PERFORM pg_notify('syncsvc_wakeup', 'job:' || job_id);
    RETURN job_id;
END
$fn$;
COMMENT ON FUNCTION syncsvc.request_reembed(text, text, integer, text, boolean, text, integer) IS
    'syncsvc: start re-embedding a target into a new generation; returns the job id';
"""


def upgrade() -> None:
    op.execute(DROP_OLD)
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DROP_NEW)
    op.execute(DOWNGRADE)
