"""Administration from SQL: the same actions as the CLI and the Python API, one implementation.

* ``syncsvc.provider_models``: the models (and their dimensions) each configured provider
  offers, published from the Python provider profiles by ``syncsvc migrate`` and by every
  daemon at start. ``syncsvc.check_model`` validates against it, so ``request_reembed`` and
  ``add_target`` refuse an unknown model or dimensions when called.
* ``syncsvc.requests``: what ``add_target``, ``remove_target`` and ``promote`` ask for. These
  need the DDL and validation that live in Python; the functions record the request and
  notify ``syncsvc_requests``, and a running daemon (already the owner) carries it out with
  the code the CLI runs, recording ``done`` with a result or ``failed`` with the reason.
  ``CALL syncsvc.wait_request(id)`` waits for the outcome.
* ``syncsvc.retry_failed(target)``: the one implementation of ``syncsvc failed retry``.
* Views ``syncsvc.status`` (one row per target), ``syncsvc.generation_status`` and
  ``syncsvc.job_status`` (``syncsvc.jobs`` is the jobs table itself); the CLI, the Python API
  and the admin page read them.
* ``targets.embed_labels``: embed rows whose columns are empty as the template's labels alone
  (off by default: such a row has no vector).

None of these is executable by PUBLIC: administration is the owner's.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

UPGRADE = r"""
ALTER TABLE syncsvc.targets ADD COLUMN embed_labels boolean NOT NULL DEFAULT false;

CREATE TABLE syncsvc.provider_models (
    provider           text NOT NULL,
    model              text NOT NULL,  -- '*': any model name the host serves
    dimensions         integer[] NOT NULL,
    default_dimensions integer NOT NULL,
    sparse             boolean NOT NULL DEFAULT false,
    published_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, model)
);
COMMENT ON TABLE syncsvc.provider_models IS
    'syncsvc: models of the configured providers, published by migrate and by each daemon';

-- The dimensions a new generation gets (the model's default when NULL), or an error saying
-- what the provider offers.
CREATE FUNCTION syncsvc.check_model(provider_name text, model_name text,
                                    dims integer DEFAULT NULL, opts jsonb DEFAULT '{}')
    RETURNS integer LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    m syncsvc.provider_models;
    known text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.provider_models p WHERE p.provider = provider_name) THEN
        SELECT string_agg(DISTINCT p.provider, ', ') INTO known FROM syncsvc.provider_models p;
        RAISE EXCEPTION 'unknown provider % (configured: %)', provider_name,
            coalesce(known, 'none yet')
            USING ERRCODE = 'undefined_object', HINT = 'a provider is known once syncsvc '
                'migrate or a daemon with it in its configuration has run';
    END IF;
    SELECT * INTO m FROM syncsvc.provider_models p
    WHERE p.provider = provider_name AND p.model IN (model_name, '*')
    ORDER BY p.model = '*' LIMIT 1;
    IF NOT FOUND THEN
        SELECT string_agg(p.model, ', ' ORDER BY p.model) INTO known
        FROM syncsvc.provider_models p WHERE p.provider = provider_name;
        RAISE EXCEPTION 'provider % does not offer model % (models: %)',
            provider_name, model_name, known USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF dims IS NULL THEN
        RETURN m.default_dimensions;
    END IF;
    IF NOT dims = ANY (m.dimensions) THEN
        RAISE EXCEPTION '% does not offer % dimensions (%)', model_name, dims,
            array_to_string(m.dimensions, '/') USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce((opts ->> 'sparse')::boolean, false) AND NOT m.sparse THEN
        RAISE EXCEPTION 'provider % cannot return sparse vectors for %: only DashScope''s '
            'native API does', provider_name, model_name
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN dims;
END
$$;

CREATE TABLE syncsvc.requests (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action       text NOT NULL CHECK (action IN ('add_target', 'remove_target', 'promote')),
    target       text NOT NULL,
    args         jsonb NOT NULL DEFAULT '{}',
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    result       jsonb,
    error        text,
    requested_by name NOT NULL DEFAULT current_user,
    requested_at timestamptz NOT NULL DEFAULT now(),
    finished_at  timestamptz
);
CREATE INDEX requests_pending ON syncsvc.requests (id) WHERE state = 'pending';
COMMENT ON TABLE syncsvc.requests IS
    'syncsvc: administrative actions asked for from SQL; a daemon carries them out';

CREATE FUNCTION syncsvc.file_request(action text, target text, args jsonb) RETURNS bigint
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    request_id bigint;
BEGIN
    INSERT INTO syncsvc.requests (action, target, args) VALUES ($1, $2, $3)
    RETURNING id INTO request_id;
    PERFORM pg_notify('syncsvc_requests', request_id::text);
    RETURN request_id;
END
$$;

CREATE FUNCTION syncsvc.add_target(
    name         text,
    source       regclass,
    columns      text[],
    model        text,
    dimensions   integer DEFAULT NULL,
    provider     text DEFAULT NULL,
    template     text DEFAULT NULL,
    pk           text[] DEFAULT NULL,
    metric       text DEFAULT 'cosine',
    embed_labels boolean DEFAULT false,
    chunking     jsonb DEFAULT NULL
) RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    v_provider text := provider;
    offering text[];
    qualified text;
BEGIN
    IF EXISTS (SELECT 1 FROM syncsvc.targets t WHERE t.name = add_target.name) THEN
        RAISE EXCEPTION 'a target named % already exists', name USING ERRCODE = 'unique_violation';
    END IF;
    IF coalesce(cardinality(columns), 0) = 0 THEN
        RAISE EXCEPTION 'give at least one column to embed' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_provider IS NULL THEN
        -- Never a silent default: the provider is implied only when one offers the model.
        SELECT array_agg(DISTINCT p.provider ORDER BY p.provider) INTO offering
        FROM syncsvc.provider_models p WHERE p.model = add_target.model;
        IF cardinality(offering) = 1 THEN
            v_provider := offering[1];
        ELSE
            RAISE EXCEPTION 'name the provider of model % (offered by: %)', model,
                coalesce(array_to_string(offering, ', '), 'no configured provider')
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    END IF;
    PERFORM syncsvc.check_model(v_provider, model, dimensions);
    SELECT format('%I.%I', n.nspname, c.relname) INTO qualified
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = source;
    RETURN syncsvc.file_request('add_target', name, jsonb_build_object(
        'table', qualified, 'columns', to_jsonb(columns), 'model', model,
        'dimensions', dimensions, 'provider', v_provider, 'template', template,
        'pk', to_jsonb(pk), 'metric', metric, 'embed_labels', embed_labels,
        'chunking', chunking));
END
$$;

CREATE FUNCTION syncsvc.remove_target(name text, keep_vectors boolean DEFAULT false)
    RETURNS bigint LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.targets t WHERE t.name = $1) THEN
        RAISE EXCEPTION 'no target named %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN syncsvc.file_request('remove_target', $1, jsonb_build_object('keep_vectors', $2));
END
$$;

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

-- Waits, bounded, for a request's outcome; raises its error if it failed.
CREATE PROCEDURE syncsvc.wait_request(request bigint, timeout_seconds float8 DEFAULT 30,
                                      INOUT result jsonb DEFAULT NULL)
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r syncsvc.requests;
    creator bigint;
    deadline timestamptz := clock_timestamp() + make_interval(secs => timeout_seconds);
BEGIN
    LOOP
        SELECT * INTO r FROM syncsvc.requests q WHERE q.id = request;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no request %', request USING ERRCODE = 'no_data_found';
        END IF;
        SELECT q.xmin::text::bigint INTO creator FROM syncsvc.requests q WHERE q.id = request;
        -- Filed in this very transaction: no daemon can see it before it commits.
        IF r.state = 'pending'
           AND creator = pg_current_xact_id_if_assigned()::text::bigint % 4294967296 THEN
            RAISE EXCEPTION 'request % is not committed yet: commit, then wait', request
                USING ERRCODE = 'invalid_transaction_state';
        END IF;
        EXIT WHEN r.state <> 'pending';
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'no daemon carried out request % within % s (is ''syncsvc run'' '
                'running?)', request, timeout_seconds USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_sleep(0.02);
    END LOOP;
    IF r.state = 'failed' THEN
        RAISE EXCEPTION '%', r.error USING ERRCODE = 'invalid_parameter_value';
    END IF;
    result := r.result;
END
$$;

CREATE FUNCTION syncsvc.retry_failed(target text DEFAULT NULL)
    RETURNS integer LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    retried integer;
BEGIN
    IF $1 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM syncsvc.targets t WHERE t.name = $1) THEN
        RAISE EXCEPTION 'no target named %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    UPDATE syncsvc.queue q
    SET state = 'pending', attempts = 0, next_attempt_at = now(), updated_at = now(),
        failed_generation = NULL
    FROM syncsvc.targets t
    WHERE t.id = q.target_id AND q.state = 'failed' AND ($1 IS NULL OR t.name = $1);
    GET DIAGNOSTICS retried = ROW_COUNT;
    IF retried > 0 THEN
        PERFORM pg_notify('syncsvc_wakeup', 'retry');
    END IF;
    RETURN retried;
END
$$;

-- Per generation: rows embedded (first chunk), rows embedded in the last minute, rows failed
-- in it. A vector table that cannot be read is reported, not an error for every target.
CREATE FUNCTION syncsvc.generation_stats()
    RETURNS TABLE (target text, generation_id integer, state text, provider text, model text,
                   dimensions integer, embedded bigint, last_minute bigint, failed bigint,
                   problem text)
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT t.name, x.* FROM syncsvc.generations x
             JOIN syncsvc.targets t ON t.id = x.target_id ORDER BY t.name, x.id LOOP
        target := g.name; generation_id := g.id; state := g.state; provider := g.provider;
        model := g.model; dimensions := g.dimensions; problem := NULL;
        BEGIN
            EXECUTE format('SELECT count(*), count(*) FILTER (WHERE embedded_at > now() - '
                           'interval ''1 minute'') FROM syncsvc.%I WHERE chunk = 0', g.table_name)
                INTO embedded, last_minute;
        EXCEPTION WHEN OTHERS THEN
            embedded := 0;
            last_minute := 0;
            problem := 'vector table unreadable: ' || SQLERRM;
        END;
        SELECT count(*) INTO failed FROM syncsvc.queue q
        WHERE q.target_id = g.target_id AND q.state = 'failed' AND q.failed_generation = g.id;
        RETURN NEXT;
    END LOOP;
END
$$;
CREATE VIEW syncsvc.generation_status AS SELECT * FROM syncsvc.generation_stats();

-- One row per target: source rows, embedded rows of the active generation, the backlog
-- (captured and queued), failures of the searched generation, the rate over the last minute
-- (vectors written in every live generation) and the time the backlog takes at that rate,
-- and why it is paused.
CREATE FUNCTION syncsvc.target_stats()
    RETURNS TABLE (target text, source_table text, rows bigint, embedded bigint,
                   pending bigint, in_flight bigint, failed bigint,
                   oldest_pending_seconds float8, rows_per_second float8, eta_seconds float8,
                   active_generation integer, model text, dimensions integer,
                   paused_reason text, generations jsonb)
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t syncsvc.targets;
    gens syncsvc.generation_status[];
    a record;
    problem text;
    queued_age float8;
    captured_age float8;
    captured bigint;
BEGIN
    -- Each vector table is counted once, whatever the number of targets.
    SELECT array_agg(s) INTO gens FROM syncsvc.generation_stats() s;
    FOR t IN SELECT * FROM syncsvc.targets ORDER BY name LOOP
        target := t.name;
        source_table := t.source_schema || '.' || t.source_table;
        problem := NULL;
        BEGIN
            EXECUTE format('SELECT count(*) FROM %I.%I', t.source_schema, t.source_table)
                INTO rows;
        EXCEPTION WHEN OTHERS THEN
            rows := 0;
            problem := format('cannot read %s: %s (fix the table, or ''syncsvc target repair %s'')',
                              source_table, SQLERRM, t.name);
        END;
        SELECT s.generation_id, s.model, s.dimensions, s.embedded INTO a
        FROM unnest(gens) s WHERE s.target = t.name AND s.state = 'active';
        active_generation := a.generation_id;
        model := a.model;
        dimensions := a.dimensions;
        embedded := coalesce(a.embedded, 0);
        problem := coalesce(problem, (SELECT s.problem FROM unnest(gens) s
                                      WHERE s.target = t.name AND s.problem IS NOT NULL
                                      ORDER BY s.generation_id LIMIT 1));
        SELECT count(*) FILTER (WHERE q.state = 'pending'),
               count(*) FILTER (WHERE q.state = 'in_flight'),
               -- A row failing only in a generation being built counts on that generation.
               count(*) FILTER (WHERE q.state = 'failed' AND (q.failed_generation IS NULL
                                OR q.failed_generation = a.generation_id)),
               extract(epoch FROM now() - min(q.enqueued_at) FILTER (WHERE q.state <> 'failed'))
        INTO pending, in_flight, failed, queued_age
        FROM syncsvc.queue q WHERE q.target_id = t.id;
        SELECT coalesce(sum(jsonb_array_length(i.pks)), 0), extract(epoch FROM now() - min(i.created_at))
        INTO captured, captured_age
        FROM syncsvc.inbox i WHERE i.target_id = t.id;
        pending := pending + captured;
        oldest_pending_seconds := greatest(queued_age, captured_age);
        rows_per_second := coalesce((SELECT sum(s.last_minute) FROM unnest(gens) s
                                     WHERE s.target = t.name
                                       AND s.state IN ('active', 'building')), 0) / 60.0;
        eta_seconds := CASE WHEN pending + in_flight = 0 THEN 0
                            WHEN rows_per_second > 0 THEN (pending + in_flight) / rows_per_second
                       END;
        paused_reason := coalesce(t.paused_reason, problem);
        -- The per-generation figures too, so one read of the view counts each table once.
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'id', s.generation_id, 'state', s.state, 'provider', s.provider,
                   'model', s.model, 'dimensions', s.dimensions, 'embedded', s.embedded,
                   'failed', s.failed) ORDER BY s.generation_id), '[]')
        INTO generations FROM unnest(gens) s WHERE s.target = t.name;
        RETURN NEXT;
    END LOOP;
END
$$;
CREATE VIEW syncsvc.status AS SELECT * FROM syncsvc.target_stats();

CREATE VIEW syncsvc.job_status AS
    SELECT j.*, t.name AS target, t.paused_reason AS target_paused, g.model, g.dimensions,
           g.provider, g.state AS generation_state
    FROM syncsvc.jobs j
    JOIN syncsvc.targets t ON t.id = j.target_id
    JOIN syncsvc.generations g ON g.id = j.generation_id;

-- Start building a new generation of a target beside its active one. The model, dimensions and
-- options are checked against syncsvc.provider_models when called; the daemon checks again
-- against its own provider profiles when it adopts the job.
CREATE OR REPLACE FUNCTION syncsvc.request_reembed(
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
    -- Validated now, against the models the daemons publish: a typo is an error here, not a
    -- failed job and an empty generation later.
    PERFORM syncsvc.check_model(v_provider, request_reembed.model, request_reembed.dimensions,
                                v_options);
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

-- Administration is the owner's: nobody else may file requests or change the catalog.
REVOKE EXECUTE ON FUNCTION syncsvc.file_request(text, text, jsonb),
    syncsvc.add_target(text, regclass, text[], text, integer, text, text, text[], text, boolean,
                       jsonb),
    syncsvc.remove_target(text, boolean), syncsvc.promote(text, integer, boolean),
    syncsvc.retry_failed(text), syncsvc.pause_target(text, text), syncsvc.resume_target(text),
    syncsvc.target_stats(), syncsvc.generation_stats(),
    syncsvc.request_reembed(text, text, integer, text, boolean, text, integer, jsonb)
    FROM PUBLIC;
REVOKE EXECUTE ON PROCEDURE syncsvc.wait_request(bigint, float8, jsonb) FROM PUBLIC;
"""

DOWNGRADE = r"""
DROP VIEW syncsvc.job_status;
DROP VIEW syncsvc.status;
DROP FUNCTION syncsvc.target_stats();
DROP VIEW syncsvc.generation_status;
DROP FUNCTION syncsvc.generation_stats();
DROP FUNCTION syncsvc.retry_failed(text);
DROP PROCEDURE syncsvc.wait_request(bigint, float8, jsonb);
DROP FUNCTION syncsvc.promote(text, integer, boolean);
DROP FUNCTION syncsvc.remove_target(text, boolean);
DROP FUNCTION syncsvc.add_target(text, regclass, text[], text, integer, text, text, text[], text,
                                 boolean, jsonb);
DROP FUNCTION syncsvc.file_request(text, text, jsonb);
DROP TABLE syncsvc.requests;
GRANT EXECUTE ON FUNCTION syncsvc.pause_target(text, text), syncsvc.resume_target(text),
    syncsvc.request_reembed(text, text, integer, text, boolean, text, integer, jsonb) TO PUBLIC;
-- Start building a new generation of a target beside its active one. The daemon validates the
-- model against its provider profile when it adopts the job (and fails it with a reason if
-- the model or dimensions are not offered).
CREATE OR REPLACE FUNCTION syncsvc.request_reembed(
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

DROP FUNCTION syncsvc.check_model(text, text, integer, jsonb);
DROP TABLE syncsvc.provider_models;
ALTER TABLE syncsvc.targets DROP COLUMN embed_labels;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
