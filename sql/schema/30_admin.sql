-- Administration from SQL: requests the daemon carries out (one implementation with the CLI
-- and Python API), and the inbox's cleanup when a target is deleted.
--
-- Applied by migrate after the Alembic revisions, on every migrate, in one transaction:
-- each definition is CREATE OR REPLACE and is the only one at head. A changed signature
-- needs a revision that drops the old one.

CREATE OR REPLACE FUNCTION syncsvc.file_request(action text, target text, args jsonb)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    request_id bigint;
BEGIN
    INSERT INTO syncsvc.requests (action, target, args) VALUES ($1, $2, $3)
    RETURNING id INTO request_id;
    PERFORM pg_notify('syncsvc_requests', request_id::text);
    RETURN request_id;
END
$function$;

-- Waits, bounded, for a request's outcome; raises its error if it failed.
CREATE OR REPLACE PROCEDURE syncsvc.wait_request(IN request bigint, IN timeout_seconds double precision DEFAULT 30, INOUT result jsonb DEFAULT NULL::jsonb)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $procedure$
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
$procedure$;

-- The dimensions a new generation gets (the model's default when NULL), or an error saying
-- what the provider offers.
CREATE OR REPLACE FUNCTION syncsvc.check_model(provider_name text, model_name text, dims integer DEFAULT NULL::integer, opts jsonb DEFAULT '{}'::jsonb)
 RETURNS integer
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION syncsvc.add_target(name text, source regclass, columns text[], model text, dimensions integer DEFAULT NULL::integer, provider text DEFAULT NULL::text, template text DEFAULT NULL::text, pk text[] DEFAULT NULL::text[], metric text DEFAULT 'cosine'::text, embed_labels boolean DEFAULT false, chunking jsonb DEFAULT NULL::jsonb, capture text DEFAULT 'triggers'::text)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_variable
DECLARE
    v_provider text := provider;
    offering text[];
    qualified text;
BEGIN
    IF EXISTS (SELECT 1 FROM syncsvc.targets t WHERE t.name = add_target.name) THEN
        RAISE EXCEPTION 'a target named % already exists', name USING ERRCODE = 'unique_violation';
    END IF;
    IF capture IS NULL OR capture NOT IN ('triggers', 'wal') THEN
        RAISE EXCEPTION 'capture must be triggers or wal, not %', capture
            USING ERRCODE = 'invalid_parameter_value';
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
        'chunking', chunking, 'capture', capture));
END
$function$;

-- Administration is the owner's (a new signature starts executable by PUBLIC).
REVOKE ALL ON FUNCTION syncsvc.add_target(text, regclass, text[], text, integer, text, text, text[], text, boolean, jsonb, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION syncsvc.remove_target(name text, keep_vectors boolean DEFAULT false)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.targets t WHERE t.name = $1) THEN
        RAISE EXCEPTION 'no target named %', $1 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN syncsvc.file_request('remove_target', $1, jsonb_build_object('keep_vectors', $2));
END
$function$;

CREATE OR REPLACE FUNCTION syncsvc.pause_target(target text, reason text DEFAULT 'paused by an operator'::text)
 RETURNS void
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    UPDATE syncsvc.targets SET paused_reason = reason, paused_at = now(), paused_by_operator = true
    WHERE name = target;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
    END IF;
    PERFORM pg_notify('syncsvc_targets', (SELECT id::text FROM syncsvc.targets WHERE name = target));
END
$function$;

CREATE OR REPLACE FUNCTION syncsvc.resume_target(target text)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION syncsvc.retry_failed(target text DEFAULT NULL::text)
 RETURNS integer
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

-- Start building a new generation of a target beside its active one. The model, dimensions and
-- options are checked against syncsvc.provider_models when called; the daemon checks again
-- against its own provider profiles when it adopts the job.
CREATE OR REPLACE FUNCTION syncsvc.request_reembed(target text, model text, dimensions integer, provider text DEFAULT NULL::text, auto_promote boolean DEFAULT false, space text DEFAULT NULL::text, max_queued integer DEFAULT NULL::integer, options jsonb DEFAULT NULL::jsonb)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

COMMENT ON FUNCTION syncsvc.request_reembed(text, text, integer, text, boolean, text, integer, jsonb) IS
    'syncsvc: start re-embedding a target into a new generation; returns the job id';

CREATE OR REPLACE FUNCTION syncsvc.promote(target text, generation integer, force boolean DEFAULT false, accept_failed boolean DEFAULT false)
 RETURNS bigint
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM syncsvc.generations g JOIN syncsvc.targets t
                   ON t.id = g.target_id WHERE t.name = $1 AND g.id = $2) THEN
        RAISE EXCEPTION 'target % has no generation %', $1, $2 USING ERRCODE = 'no_data_found';
    END IF;
    RETURN syncsvc.file_request('promote', $1,
        jsonb_build_object('generation', $2, 'force', $3, 'accept_failed', $4));
END
$function$;

CREATE OR REPLACE FUNCTION syncsvc.forget_inbox()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    DELETE FROM syncsvc.inbox i USING old_targets o WHERE i.target_id = o.id;
    RETURN NULL;
END
$function$;
