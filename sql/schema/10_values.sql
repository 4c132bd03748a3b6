-- Values every path shares: the content hash, what counts as text, keys and names.
--
-- Applied by migrate after the Alembic revisions, on every migrate, in one transaction:
-- each definition is CREATE OR REPLACE and is the only one at head. A changed signature
-- needs a revision that drops the old one.

-- Mirrors syncsvc.models.content_hash: the hash of the exact input for one generation.
CREATE OR REPLACE FUNCTION syncsvc.content_hash(generation_key text, input text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN sha256(convert_to(generation_key || chr(31) || input, 'UTF8'));

-- The one definition of "this row has text to embed", used by every path (worker, sweep,
-- coverage, jobs, status): some character that is not white space, a control or an invisible
-- format character (NBSP, zero-width space, BOM, soft hyphen, U+001F ...). Applied to the
-- embedded columns only, never to the template's literals.
CREATE OR REPLACE FUNCTION syncsvc.has_text(fields text) RETURNS boolean
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN fields ~ '[^\u0001-\u0020\u007f-\u00a0\u00ad\u034f\u061c\u115f\u1160\u1680\u17b4\u17b5\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8]';

-- The database encoding is fixed, so this is immutable in practice (as content_hash is).
CREATE OR REPLACE FUNCTION syncsvc.text_digest(query text) RETURNS bytea
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN sha256(convert_to(query, 'UTF8'));

CREATE OR REPLACE FUNCTION syncsvc.key_object(pk_columns text[], pk jsonb)
 RETURNS jsonb
 LANGUAGE plpgsql
 IMMUTABLE
AS $function$
BEGIN
    IF jsonb_typeof(pk) = 'object' THEN
        RETURN pk;
    ELSIF jsonb_typeof(pk) = 'array' THEN
        IF jsonb_array_length(pk) <> cardinality(pk_columns) THEN
            RAISE EXCEPTION 'key % has % values; the key is (%)', pk, jsonb_array_length(pk),
                array_to_string(pk_columns, ', ') USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN (SELECT jsonb_object_agg(c, pk -> (i::int - 1))
                FROM unnest(pk_columns) WITH ORDINALITY AS u(c, i));
    ELSIF cardinality(pk_columns) = 1 THEN
        RETURN jsonb_build_object(pk_columns[1], pk);
    END IF;
    RAISE EXCEPTION 'key % must be an object or array of (%)', pk,
        array_to_string(pk_columns, ', ') USING ERRCODE = 'invalid_parameter_value';
END
$function$;

-- A relation's name, always schema-qualified (regclass::text drops a schema on the path).
CREATE OR REPLACE FUNCTION syncsvc.qualified_name(rel oid) RETURNS text
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
    RETURN (SELECT format('%I.%I', n.nspname, c.relname)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel);
