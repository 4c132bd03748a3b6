"""The one definition of each SQL function, procedure, view and trigger of schema syncsvc.

They live in ``sql/schema/*.sql`` as ``CREATE OR REPLACE`` statements, applied in file-name
order by ``migrate`` after the Alembic revisions, in the same transaction, whenever the schema
reaches the head (every ``migrate``: applying them again changes nothing, and keeps each
function's OID and ACL, so the capture triggers on application tables stay valid). The
revisions keep the tables and columns, and drop functions whose signature changes; the
definitions they created before this file existed are history, replaced here at the head.
"""

from __future__ import annotations

from syncsvc.resources import sql_dir

DIRECTORY = "schema"


def definitions_sql() -> str:
    """Every definition, in the order it must run (functions before the views calling them)."""
    files = sorted((sql_dir() / DIRECTORY).glob("*.sql"))
    if not files:
        raise FileNotFoundError(f"no definitions in {sql_dir() / DIRECTORY}")
    return "\n\n".join(f.read_text(encoding="utf-8").strip() for f in files) + "\n"
