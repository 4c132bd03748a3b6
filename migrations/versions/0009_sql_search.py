"""Search by text from SQL alone (psql, BI tools), with no extension beyond pgvector.

``CALL syncsvc.embed_query(target, query)`` records the query in ``syncsvc.query_requests``,
commits, wakes the daemons (NOTIFY ``syncsvc_queries``) and waits, bounded, until a daemon has
embedded it into ``syncsvc.query_cache``; ``syncsvc.search(target, query, k, filter)`` then
answers from the cache, with no API call. A query already cached returns at once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

UPGRADE = r"""
-- The database encoding is fixed, so this is immutable in practice (as content_hash is).
CREATE FUNCTION syncsvc.text_digest(query text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN sha256(convert_to(query, 'UTF8'));

CREATE TABLE syncsvc.query_requests (
    generation_id integer NOT NULL REFERENCES syncsvc.generations (id) ON DELETE CASCADE,
    query         text NOT NULL,
    -- Derived, never given: a searcher cannot file a query under another text's key.
    text_hash     bytea NOT NULL GENERATED ALWAYS AS (syncsvc.text_digest(query)) STORED,
    state         text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
    query_hash    bytea,
    error         text,
    requested_at  timestamptz NOT NULL DEFAULT now(),
    done_at       timestamptz,
    PRIMARY KEY (generation_id, text_hash)
);
CREATE INDEX query_requests_pending ON syncsvc.query_requests (requested_at)
    WHERE state = 'pending';
COMMENT ON TABLE syncsvc.query_requests IS
    'syncsvc: text queries asked for from SQL; a daemon embeds them into query_cache';

-- The cached vector of a text query in a target's active generation, or NULL.
CREATE FUNCTION syncsvc.query_vector(target text, query text) RETURNS vector
    LANGUAGE sql STABLE AS $$
    -- Positional: a parameter named like a column (query_requests.query) would lose to it.
    SELECT c.embedding
    FROM syncsvc.search_generation($1) g
    JOIN syncsvc.query_requests r ON r.generation_id = g.generation_id
         AND r.text_hash = syncsvc.text_digest($2) AND r.state = 'done'
    JOIN syncsvc.query_cache c ON c.generation_id = r.generation_id
         AND c.query_hash = r.query_hash
$$;

CREATE PROCEDURE syncsvc.embed_query(target text, query text, timeout_seconds float8 DEFAULT 10)
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
        RETURN;  -- cached: no API call, no wait
    END IF;
    INSERT INTO syncsvc.query_requests AS r (generation_id, query)
    VALUES (gen, query)
    ON CONFLICT (generation_id, text_hash) DO UPDATE
        SET state = 'pending', error = NULL, requested_at = now()
        WHERE r.state <> 'pending';
    PERFORM pg_notify('syncsvc_queries', gen::text);
    COMMIT;  -- the daemons must see the request
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

-- The k rows nearest to a text query that embed_query has embedded (from the cache).
CREATE FUNCTION syncsvc.search(target text, query text, k integer DEFAULT 10,
                               filter text DEFAULT NULL)
    RETURNS TABLE (pk jsonb, distance double precision)
    LANGUAGE plpgsql AS $$
DECLARE
    v vector := syncsvc.query_vector(target, query);
BEGIN
    IF v IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'no_data_found', MESSAGE = format(
            'the query %L is not embedded yet: CALL syncsvc.embed_query(%L, %L) first',
            query, target, query);
    END IF;
    RETURN QUERY SELECT s.pk, s.distance FROM syncsvc.search_by_vector(target, v, k, filter) s;
END
$$;
COMMENT ON FUNCTION syncsvc.search(text, text, integer, text) IS
    'syncsvc: k nearest rows to a text query (CALL syncsvc.embed_query first; cached after)';

DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT DISTINCT role_name FROM syncsvc.search_grants LOOP
        EXECUTE format('GRANT SELECT, INSERT (generation_id, query), '
                       'UPDATE (state, error, requested_at) ON syncsvc.query_requests TO %I',
                       r.role_name);
    END LOOP;
END
$$;
"""

DOWNGRADE = r"""
DROP FUNCTION syncsvc.search(text, text, integer, text);
DROP PROCEDURE syncsvc.embed_query(text, text, float8);
DROP FUNCTION syncsvc.query_vector(text, text);
DROP TABLE syncsvc.query_requests;
DROP FUNCTION syncsvc.text_digest(text);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
