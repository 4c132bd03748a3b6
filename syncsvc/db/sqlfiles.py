"""Named SQL queries loaded from ``sql/*.sql`` files.

Each file holds sections introduced by ``-- name: query_name --``; the text up to the next
marker is the query. Keeping SQL in .sql files lets DBAs read and review it as SQL.
"""

from __future__ import annotations

import re
from functools import cache

from psycopg import sql

from syncsvc.core.resources import sql_dir

_MARKER = re.compile(r"^--\s*name:\s*(?P<name>\w+)\s*--\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """Split a .sql file into its named sections."""
    queries: dict[str, str] = {}
    matches = list(_MARKER.finditer(text))
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        body = text[match.end() : end].strip()
        queries[match.group("name")] = body
    return queries


@cache
def load(file: str) -> dict[str, str]:
    return parse((sql_dir() / f"{file}.sql").read_text(encoding="utf-8"))


def query(file: str, name: str) -> sql.SQL:
    """Return the named query of ``sql/<file>.sql`` as a composable ``psycopg.sql.SQL``."""
    try:
        return sql.SQL(load(file)[name])
    except KeyError:
        raise KeyError(f"no query named {name!r} in sql/{file}.sql") from None
