"""What the framework adapters share: filters as bound SQL, a hit's text and metadata."""

from __future__ import annotations

from typing import Any

from psycopg import sql

from syncsvc.db import quoting
from syncsvc.search.engine import SearchHit


def where_clause(filter: dict[str, Any] | None) -> tuple[str | None, list[Any]]:
    """``{"lang": "en", "year": 2024}`` as ``"s"."lang" = %s AND "s"."year" = %s`` and its
    values (column names quoted as identifiers, values always bound)."""
    if not filter:
        return None, []
    parts = [
        sql.SQL("{} = %s").format(quoting.ident("s", column)).as_string(None) for column in filter
    ]
    return " AND ".join(parts), list(filter.values())


def condition(
    filter: dict[str, Any] | None, where: str | None, params: list[Any] | None
) -> tuple[str | None, list[Any]]:
    """``filter`` and a free ``where`` (with its ``params``) as one condition over ``s``."""
    clause, values = where_clause(filter)
    conditions = [c for c in (clause, f"({where})" if where else None) if c]
    return (" AND ".join(conditions) or None), [*values, *(params or [])]


def content(hit: SearchHit, columns: list[str]) -> str:
    """The hit's ``columns`` joined by blank lines (empty ones left out)."""
    return "\n\n".join(str(hit.row[c]) for c in columns if hit.row.get(c) not in (None, ""))


def metadata(hit: SearchHit, target: str) -> dict[str, Any]:
    """The whole source row, plus where it came from and how near it was."""
    return {**hit.row, "pk": hit.pk, "distance": hit.distance, "target": target}
