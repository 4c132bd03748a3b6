"""Private, bounded searches and the least function surface.

* ``syncsvc.query_requests`` rows belong to the role that filed them (``requested_by``, the
  filing statement's ``current_user``). Row-level security lets a role read and change only its
  own requests, and file one only on a target it holds a search grant on. The owner (the
  daemon) is exempt, as table owners are. RLS rather than SECURITY DEFINER functions: a
  definer function only knows ``session_user``, which conflates every role reached by
  ``SET ROLE`` from one login (PostgREST, poolers), and ``embed_query`` must ``COMMIT``,
  which a definer procedure may not.
* The text of a request is erased once a daemon has answered it (or after the daemon's
  ``search.query_text_retention_seconds``); ``text_hash`` stays, so ``syncsvc.search`` still
  finds the cached vector. ``text_hash`` is kept by a trigger instead of a generated column.
* ``syncsvc.search_grants`` carries per-grant limits: ``max_queries_per_minute`` (query
  embeddings that reach the provider; cache hits are free) and ``max_query_tokens``. A role
  reads its own grants only (RLS). The daemon refuses a request over a limit (state
  ``refused``) and ``embed_query`` raises ``configuration_limit_exceeded`` with the reason.
* No function of schema syncsvc is executable by PUBLIC except the search functions readers
  call (``syncsvc.privileges.PUBLIC_FUNCTIONS`` is the allow-list).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# What readers must call; every other function of schema syncsvc is the owner's.
PUBLIC_FUNCTIONS = (
    "syncsvc.search_generation(text, integer)",
    "syncsvc.vector_strategy(integer, text)",
    "syncsvc.key_object(text[], jsonb)",
    "syncsvc.search_query(text, integer, text, integer)",
    "syncsvc.search_by_vector(text, vector, integer, text, integer)",
    "syncsvc.similar_rows(text, jsonb, integer, text, integer)",
    "syncsvc.text_digest(text)",
    "syncsvc.has_text(text)",
    "syncsvc.query_vector(text, text)",
    "syncsvc.embed_query(text, text, float8)",
    "syncsvc.search(text, text, integer, text)",
)

LOCK_FUNCTIONS = (
    r"""
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = 'syncsvc'::regnamespace LOOP
        EXECUTE format('REVOKE ALL ON ROUTINE %s FROM PUBLIC', f);
    END LOOP;
END
$$;
GRANT EXECUTE ON ROUTINE """
    + ", ".join(PUBLIC_FUNCTIONS)
    + " TO PUBLIC;\n"
)

GRANTS = r"""
ALTER TABLE syncsvc.search_grants
    ADD COLUMN max_queries_per_minute integer NOT NULL DEFAULT 30
        CHECK (max_queries_per_minute >= 0),
    ADD COLUMN max_query_tokens integer NOT NULL DEFAULT 256 CHECK (max_query_tokens >= 1);
ALTER TABLE syncsvc.search_grants ENABLE ROW LEVEL SECURITY;
-- A role sees the grants it holds, itself or through a role it belongs to (a recorded role may
-- have been dropped since: it matches nobody).
CREATE POLICY own_grants ON syncsvc.search_grants FOR SELECT USING (EXISTS (
    SELECT 1 FROM pg_roles r WHERE r.rolname = role_name AND pg_has_role(r.oid, 'USAGE')));

DROP FUNCTION syncsvc.grant_search(name, text);
CREATE FUNCTION syncsvc.grant_search(grantee name, target text DEFAULT NULL,
                                     max_queries_per_minute integer DEFAULT 30,
                                     max_query_tokens integer DEFAULT 256) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_variable
DECLARE
    tid integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grantee) THEN
        RAISE EXCEPTION 'role % does not exist', grantee USING ERRCODE = 'undefined_object';
    END IF;
    IF coalesce(max_queries_per_minute, -1) < 0 OR coalesce(max_query_tokens, 0) < 1 THEN
        RAISE EXCEPTION 'max_queries_per_minute must be >= 0 and max_query_tokens >= 1'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF target IS NOT NULL THEN
        SELECT t.id INTO tid FROM syncsvc.targets t WHERE t.name = target;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    INSERT INTO syncsvc.search_grants AS sg
        (role_name, target_id, max_queries_per_minute, max_query_tokens)
    VALUES (grantee, tid, max_queries_per_minute, max_query_tokens)
    ON CONFLICT (role_name, coalesce(target_id, 0)) DO UPDATE
        SET max_queries_per_minute = EXCLUDED.max_queries_per_minute,
            max_query_tokens = EXCLUDED.max_query_tokens;
    RETURN syncsvc.apply_search_grants(tid);
END
$$;
"""

APPLY_GRANTS = r"""
CREATE OR REPLACE FUNCTION syncsvc.apply_search_grants(target integer DEFAULT NULL)
    RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
    granted integer := 0;
BEGIN
    FOR r IN SELECT DISTINCT role_name FROM syncsvc.search_grants
             WHERE target IS NULL OR target_id IS NULL OR target_id = target LOOP
        EXECUTE format('GRANT USAGE ON SCHEMA syncsvc TO %I', r.role_name);
        -- The catalog tells a search which generation table to read; the caches give repeated
        -- queries their vectors. Cache rows are written by syncsvc only, so nobody can plant a
        -- vector for another user's query. Grants and requests: a role's own rows only (RLS).
        EXECUTE format('GRANT SELECT ON syncsvc.targets, syncsvc.generations, '
                       'syncsvc.query_cache, syncsvc.sparse_query_cache, '
                       'syncsvc.search_grants TO %I', r.role_name);
        -- Only what filing a request takes: its key is derived, its answer the daemon's.
        EXECUTE format('GRANT SELECT, INSERT (generation_id, query), '
                       'UPDATE (query, state, error, requested_at) '
                       'ON syncsvc.query_requests TO %I', r.role_name);
    END LOOP;
    FOR r IN SELECT sg.role_name, t.name, g.table_name
             FROM syncsvc.search_grants sg
             JOIN syncsvc.targets t ON sg.target_id IS NULL OR sg.target_id = t.id
             JOIN syncsvc.generations g ON g.target_id = t.id
             WHERE target IS NULL OR t.id = target LOOP
        IF to_regclass(format('syncsvc.%I', r.table_name)) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON syncsvc.%I TO %I', r.table_name, r.role_name);
            granted := granted + 1;
        END IF;
        IF to_regclass(format('syncsvc.%I', r.name || '_embeddings')) IS NOT NULL THEN
            EXECUTE format('GRANT SELECT ON syncsvc.%I TO %I', r.name || '_embeddings',
                           r.role_name);
        END IF;
    END LOOP;
    RETURN granted;
END
$$;

CREATE OR REPLACE FUNCTION syncsvc.revoke_search(grantee name, target text DEFAULT NULL)
    RETURNS void
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r record;
BEGIN
    DELETE FROM syncsvc.search_grants sg
    WHERE sg.role_name = grantee
      AND (target IS NULL
           OR sg.target_id = (SELECT id FROM syncsvc.targets WHERE name = target));
    FOR r IN SELECT t.name, g.table_name FROM syncsvc.targets t
             JOIN syncsvc.generations g ON g.target_id = t.id
             WHERE (target IS NULL OR t.name = target)
               AND NOT EXISTS (SELECT 1 FROM syncsvc.search_grants sg
                               WHERE sg.role_name = grantee
                                 AND (sg.target_id IS NULL OR sg.target_id = t.id)) LOOP
        IF to_regclass(format('syncsvc.%I', r.table_name)) IS NOT NULL THEN
            EXECUTE format('REVOKE SELECT ON syncsvc.%I FROM %I', r.table_name, grantee);
        END IF;
        IF to_regclass(format('syncsvc.%I', r.name || '_embeddings')) IS NOT NULL THEN
            EXECUTE format('REVOKE SELECT ON syncsvc.%I FROM %I', r.name || '_embeddings',
                           grantee);
        END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM syncsvc.search_grants sg
                   WHERE sg.role_name = grantee) THEN
        EXECUTE format('REVOKE SELECT ON syncsvc.targets, syncsvc.generations, '
                       'syncsvc.query_cache, syncsvc.sparse_query_cache, '
                       'syncsvc.search_grants FROM %I', grantee);
        EXECUTE format('REVOKE ALL ON syncsvc.query_requests FROM %I', grantee);
        EXECUTE format('REVOKE USAGE ON SCHEMA syncsvc FROM %I', grantee);
    END IF;
END
$$;
"""

REQUESTS = r"""
ALTER TABLE syncsvc.query_requests ALTER COLUMN text_hash DROP EXPRESSION;
ALTER TABLE syncsvc.query_requests
    ALTER COLUMN query DROP NOT NULL,
    ADD COLUMN requested_by name NOT NULL DEFAULT current_user,
    -- When the request was counted against its role's per-minute budget (it reached the
    -- provider); NULL for cache hits and refusals.
    ADD COLUMN billed_at timestamptz,
    ADD COLUMN tokens integer,
    DROP CONSTRAINT query_requests_state_check,
    ADD CONSTRAINT query_requests_state_check
        CHECK (state IN ('pending', 'done', 'failed', 'refused')),
    DROP CONSTRAINT query_requests_pkey,
    ADD PRIMARY KEY (generation_id, requested_by, text_hash);
CREATE INDEX query_requests_billed ON syncsvc.query_requests (requested_by, billed_at)
    WHERE billed_at IS NOT NULL;

-- The key is derived from the text, never given; once erased, the text cannot come back as
-- another text under the same key.
CREATE FUNCTION syncsvc.query_request_key() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.query IS NULL THEN
            RAISE EXCEPTION 'a query request needs its text' USING ERRCODE = 'not_null_violation';
        END IF;
        NEW.text_hash := syncsvc.text_digest(NEW.query);
    ELSIF NEW.query IS NOT NULL AND syncsvc.text_digest(NEW.query) <> OLD.text_hash THEN
        RAISE EXCEPTION 'a query request''s text cannot change'
            USING ERRCODE = 'invalid_parameter_value';
    ELSE
        NEW.text_hash := OLD.text_hash;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER query_request_key BEFORE INSERT OR UPDATE ON syncsvc.query_requests
    FOR EACH ROW EXECUTE FUNCTION syncsvc.query_request_key();

ALTER TABLE syncsvc.query_requests ENABLE ROW LEVEL SECURITY;
-- A role sees and changes its own requests, and files them only where it may search.
CREATE POLICY own_requests ON syncsvc.query_requests
    USING (requested_by = current_user)
    WITH CHECK (requested_by = current_user AND EXISTS (
        SELECT 1 FROM syncsvc.search_grants sg
        JOIN syncsvc.generations g ON sg.target_id IS NULL OR sg.target_id = g.target_id
        JOIN pg_roles r ON r.rolname = sg.role_name
        WHERE g.id = generation_id AND pg_has_role(r.oid, 'USAGE')));

-- The caller's own request only: another role's answer is not this role's to read.
CREATE OR REPLACE FUNCTION syncsvc.query_vector(target text, query text) RETURNS vector
    LANGUAGE sql STABLE AS $$
    -- Positional: a parameter named like a column (query_requests.query) would lose to it.
    SELECT c.embedding
    FROM syncsvc.search_generation($1) g
    JOIN syncsvc.query_requests r ON r.generation_id = g.generation_id
         AND r.requested_by = current_user
         AND r.text_hash = syncsvc.text_digest($2) AND r.state = 'done'
    JOIN syncsvc.query_cache c ON c.generation_id = r.generation_id
         AND c.query_hash = r.query_hash
$$;

CREATE OR REPLACE PROCEDURE syncsvc.embed_query(target text, query text,
                                                timeout_seconds float8 DEFAULT 10)
    LANGUAGE plpgsql AS $$
DECLARE
    gen integer;
    tid integer;
    digest bytea := syncsvc.text_digest(query);
    deadline timestamptz;
    outcome text;
    reason text;
BEGIN
    SELECT g.generation_id INTO gen FROM syncsvc.search_generation(target) g;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no active generation', target
            USING ERRCODE = 'no_data_found';
    END IF;
    SELECT x.target_id INTO tid FROM syncsvc.generations x WHERE x.id = gen;
    -- The owner of syncsvc's tables may search everything; others need a grant (RLS shows a
    -- role its own grants only).
    IF NOT pg_has_role((SELECT c.relowner FROM pg_class c
                        WHERE c.oid = 'syncsvc.query_requests'::regclass), 'USAGE')
       AND NOT EXISTS (SELECT 1 FROM syncsvc.search_grants sg
                       JOIN pg_roles r ON r.rolname = sg.role_name
                       WHERE pg_has_role(r.oid, 'USAGE')
                         AND (sg.target_id IS NULL OR sg.target_id = tid)) THEN
        RAISE EXCEPTION 'role % may not search target % (syncsvc grant search % --target %)',
            current_user, target, current_user, target USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF query IS NULL OR NOT syncsvc.has_text(query) THEN
        RAISE EXCEPTION 'the search text is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF syncsvc.query_vector(target, query) IS NOT NULL THEN
        RETURN;  -- cached: no API call, no wait
    END IF;
    INSERT INTO syncsvc.query_requests AS r (generation_id, query)
    VALUES (gen, query)
    ON CONFLICT (generation_id, requested_by, text_hash) DO UPDATE
        SET query = EXCLUDED.query, state = 'pending', error = NULL, requested_at = now()
        WHERE r.state <> 'pending';
    PERFORM pg_notify('syncsvc_queries', gen::text);
    COMMIT;  -- the daemons must see the request
    deadline := clock_timestamp() + make_interval(secs => timeout_seconds);
    LOOP
        SELECT r.state, r.error INTO outcome, reason FROM syncsvc.query_requests r
        WHERE r.generation_id = gen AND r.requested_by = current_user AND r.text_hash = digest;
        EXIT WHEN outcome IS DISTINCT FROM 'pending';
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'no daemon embedded the query within % s (is ''syncsvc run'' running?)',
                timeout_seconds USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    IF outcome = 'refused' THEN
        RAISE EXCEPTION '%', reason USING ERRCODE = 'configuration_limit_exceeded';
    ELSIF outcome = 'failed' THEN
        RAISE EXCEPTION 'the query could not be embedded: %', reason;
    END IF;
END
$$;
"""

UPGRADE = GRANTS + APPLY_GRANTS + REQUESTS + "SELECT syncsvc.apply_search_grants();\n"

DOWNGRADE = r"""
DROP POLICY own_requests ON syncsvc.query_requests;
ALTER TABLE syncsvc.query_requests DISABLE ROW LEVEL SECURITY;
DROP TRIGGER query_request_key ON syncsvc.query_requests;
DROP FUNCTION syncsvc.query_request_key();
DELETE FROM syncsvc.query_requests WHERE query IS NULL OR state = 'refused';
-- One row per text again: the owner's, else any.
DELETE FROM syncsvc.query_requests r USING syncsvc.query_requests o
WHERE r.generation_id = o.generation_id AND r.text_hash = o.text_hash
  AND r.ctid > o.ctid;
ALTER TABLE syncsvc.query_requests
    DROP CONSTRAINT query_requests_pkey,
    DROP CONSTRAINT query_requests_state_check,
    ADD CONSTRAINT query_requests_state_check CHECK (state IN ('pending', 'done', 'failed')),
    DROP COLUMN requested_by, DROP COLUMN billed_at, DROP COLUMN tokens,
    ALTER COLUMN query SET NOT NULL,
    DROP COLUMN text_hash;
ALTER TABLE syncsvc.query_requests
    ADD COLUMN text_hash bytea NOT NULL GENERATED ALWAYS AS (syncsvc.text_digest(query)) STORED,
    ADD PRIMARY KEY (generation_id, text_hash);
CREATE OR REPLACE FUNCTION syncsvc.query_vector(target text, query text) RETURNS vector
    LANGUAGE sql STABLE AS $$
    SELECT c.embedding
    FROM syncsvc.search_generation($1) g
    JOIN syncsvc.query_requests r ON r.generation_id = g.generation_id
         AND r.text_hash = syncsvc.text_digest($2) AND r.state = 'done'
    JOIN syncsvc.query_cache c ON c.generation_id = r.generation_id
         AND c.query_hash = r.query_hash
$$;
CREATE OR REPLACE PROCEDURE syncsvc.embed_query(target text, query text,
                                                timeout_seconds float8 DEFAULT 10)
    LANGUAGE plpgsql AS $$
DECLARE
    gen integer;
    digest bytea := syncsvc.text_digest(query);
    deadline timestamptz;
    outcome text;
    reason text;
BEGIN
    SELECT g.generation_id INTO gen FROM syncsvc.search_generation(target) g;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'target % has no active generation', target
            USING ERRCODE = 'no_data_found';
    END IF;
    IF query IS NULL OR NOT syncsvc.has_text(query) THEN
        RAISE EXCEPTION 'the search text is empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF syncsvc.query_vector(target, query) IS NOT NULL THEN
        RETURN;
    END IF;
    INSERT INTO syncsvc.query_requests AS r (generation_id, query)
    VALUES (gen, query)
    ON CONFLICT (generation_id, text_hash) DO UPDATE
        SET state = 'pending', error = NULL, requested_at = now()
        WHERE r.state <> 'pending';
    PERFORM pg_notify('syncsvc_queries', gen::text);
    COMMIT;
    deadline := clock_timestamp() + make_interval(secs => timeout_seconds);
    LOOP
        SELECT r.state, r.error INTO outcome, reason FROM syncsvc.query_requests r
        WHERE r.generation_id = gen AND r.text_hash = digest;
        EXIT WHEN outcome IS DISTINCT FROM 'pending';
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'no daemon embedded the query within % s (is ''syncsvc run'' running?)',
                timeout_seconds USING ERRCODE = 'query_canceled';
        END IF;
        PERFORM pg_sleep(0.01);
    END LOOP;
    IF outcome = 'failed' THEN
        RAISE EXCEPTION 'the query could not be embedded: %', reason;
    END IF;
END
$$;
DROP POLICY own_grants ON syncsvc.search_grants;
ALTER TABLE syncsvc.search_grants DISABLE ROW LEVEL SECURITY;
DROP FUNCTION syncsvc.grant_search(name, text, integer, integer);
CREATE FUNCTION syncsvc.grant_search(grantee name, target text DEFAULT NULL) RETURNS integer
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    tid integer;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = grantee) THEN
        RAISE EXCEPTION 'role % does not exist', grantee USING ERRCODE = 'undefined_object';
    END IF;
    IF target IS NOT NULL THEN
        SELECT id INTO tid FROM syncsvc.targets WHERE name = target;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'no target named %', target USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    INSERT INTO syncsvc.search_grants (role_name, target_id) VALUES (grantee, tid)
        ON CONFLICT (role_name, coalesce(target_id, 0)) DO NOTHING;
    RETURN syncsvc.apply_search_grants(tid);
END
$$;
ALTER TABLE syncsvc.search_grants DROP COLUMN max_queries_per_minute,
    DROP COLUMN max_query_tokens;
"""


def upgrade() -> None:
    op.execute(UPGRADE)
    op.execute(LOCK_FUNCTIONS)


def downgrade() -> None:
    op.execute(DOWNGRADE)
