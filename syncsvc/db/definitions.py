"""The one definition of each SQL function, procedure, view and trigger of schema syncsvc.

They live in ``sql/schema/*.sql`` as ``CREATE OR REPLACE`` statements, applied in file-name
order by ``migrate`` after the Alembic revisions, in the same transaction, whenever the schema
reaches the head (every ``migrate``: applying them again changes nothing, and keeps each
function's OID and ACL, so the capture triggers on application tables stay valid). The
revisions keep the tables and columns, and drop functions whose signature changes; the
definitions they created before these files existed are history, replaced here at the head.

Replacing a view takes an ACCESS EXCLUSIVE lock on it, replacing a trigger a SHARE ROW
EXCLUSIVE lock on its table: running daemons read these views and write these tables, so a view
or trigger is replaced only when its definition differs (functions take no lock on a relation).
"""

from __future__ import annotations

import re

from syncsvc.core.resources import sql_dir

DIRECTORY = "schema"
_END = re.compile(r";[ \t]*\n")
_VIEW = re.compile(r"^CREATE OR REPLACE VIEW (?P<name>syncsvc\.\w+) AS\s(?P<query>.*)$", re.S)
_TRIGGER = re.compile(r"^CREATE OR REPLACE TRIGGER (?P<name>\w+) .* ON (?P<table>syncsvc\.\w+) ")
_QUOTE = "$syncsvc_definition$"


def source() -> str:
    """The files as written, in the order they run (functions before the views calling them)."""
    files = sorted((sql_dir() / DIRECTORY).glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no definitions in {sql_dir() / DIRECTORY}")
    return "\n\n".join(f.read_text(encoding="utf-8").strip() for f in files) + "\n"


def definitions_sql() -> str:
    """What ``migrate`` runs: the files, each view and trigger guarded by a comparison with
    what the database has."""
    parts: list[str] = []
    for file in sorted((sql_dir() / DIRECTORY).glob("*.sql")):
        text = file.read_text(encoding="utf-8").strip() + "\n"
        if "$" in text:  # function bodies: dollar-quoted, replaced as they are
            parts.append(text)
            continue
        parts.extend(_guarded(statement) for statement in _statements(text))
    return "\n".join(parts)


def _statements(text: str) -> list[str]:
    """A file without dollar quotes split at the semicolons that end a line."""
    return [s.strip() + ";\n" for s in _END.split(text) if _code(s)]


def _code(text: str) -> str:
    return "\n".join(
        line for line in text.strip().splitlines() if not line.startswith("--")
    ).strip()


def _literal(text: str) -> str:
    if _QUOTE in text:
        raise ValueError(f"a definition may not contain {_QUOTE}")
    return f"{_QUOTE}{text}{_QUOTE}"


def _guarded(statement: str) -> str:
    code = _code(statement).rstrip(";")
    notes = "".join(line + "\n" for line in statement.splitlines() if line.startswith("--"))
    view = _VIEW.match(code)
    if view:
        # The wanted definition, as PostgreSQL prints it: from a temporary view of the same
        # query (no lock on the real one); without the TEMPORARY right, replace.
        return f"""{notes}DO {_QUOTE[:-1]}_do$
DECLARE
    wanted text;
BEGIN
    IF to_regclass({_literal(view["name"])}) IS NULL THEN
        EXECUTE {_literal(code)};
        RETURN;
    END IF;
    BEGIN
        EXECUTE 'CREATE TEMPORARY VIEW syncsvc_definition AS ' || {_literal(view["query"])};
        wanted := pg_get_viewdef('pg_temp.syncsvc_definition'::regclass);
        DROP VIEW pg_temp.syncsvc_definition;
    EXCEPTION WHEN insufficient_privilege THEN
        wanted := NULL;
    END;
    IF wanted IS DISTINCT FROM pg_get_viewdef(to_regclass({_literal(view["name"])})) THEN
        EXECUTE {_literal(code)};
    END IF;
END
{_QUOTE[:-1]}_do$;
"""
    trigger = _TRIGGER.match(code)
    if trigger:
        existing = code.replace("CREATE OR REPLACE TRIGGER", "CREATE TRIGGER", 1)
        return f"""{notes}DO {_QUOTE[:-1]}_do$
BEGIN
    IF (SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t
        WHERE t.tgrelid = to_regclass({_literal(trigger["table"])})
          AND t.tgname = {_literal(trigger["name"])})
       IS DISTINCT FROM {_literal(existing)} THEN
        EXECUTE {_literal(code)};
    END IF;
END
{_QUOTE[:-1]}_do$;
"""
    return statement
