"""Roles and rights: which roles may search, and the audit of syncsvc's definer functions.

The SQL functions ``syncsvc.grant_search`` / ``syncsvc.revoke_search`` (migration 0007) are the
one implementation; the CLI (``syncsvc grant search``) and Python call them. Grants are recorded
in ``syncsvc.search_grants`` and re-applied whenever syncsvc creates a vector table or a view
and on every ``migrate``, so a promote or a re-embed never takes a reader's access away.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from syncsvc.core.errors import NotFoundError, ValidationError
from syncsvc.core.models import Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, sqlfiles

# What a search role receives, for the README, docs and ``grant search`` output.
SEARCH_PRIVILEGES = (
    "USAGE ON SCHEMA syncsvc",
    "SELECT ON syncsvc.targets, syncsvc.generations",
    "SELECT ON syncsvc.query_cache, syncsvc.sparse_query_cache",
    "SELECT ON every vector table of the target(s) (syncsvc.<target>_g<N>)",
    "SELECT ON the view syncsvc.<target>_embeddings",
    "SELECT ON syncsvc.search_grants (its own rows only)",
    "SELECT, INSERT (generation_id, query), UPDATE (query, state, error, requested_at) ON "
    "syncsvc.query_requests (its own rows only, on targets it may search)",
)

DEFAULT_MAX_QUERIES_PER_MINUTE = 30
"""Query embeddings a role may have billed per minute unless its grant says otherwise."""
DEFAULT_MAX_QUERY_TOKENS = 256
"""The longest query (in the model's tokens) a role may have embedded unless granted more."""

PUBLIC_FUNCTIONS = (
    "syncsvc.embed_query(text,text,double precision)",
    "syncsvc.has_text(text)",
    "syncsvc.key_object(text[],jsonb)",
    "syncsvc.query_vector(text,text)",
    "syncsvc.search(text,text,integer,text)",
    "syncsvc.search_by_vector(text,vector,integer,text,integer)",
    "syncsvc.search_generation(text,integer)",
    "syncsvc.search_query(text,integer,text,integer)",
    "syncsvc.similar_rows(text,jsonb,integer,text,integer)",
    "syncsvc.text_digest(text)",
    "syncsvc.vector_strategy(integer,text)",
)
"""The functions of schema syncsvc PUBLIC may execute: those a search role calls (or they call).
Schema USAGE, given by ``grant search``, still gates them. Everything else is the owner's."""


@dataclass(frozen=True)
class SearchGrant:
    """A role allowed to search one target (``target`` None: every target, also future ones)."""

    role: str
    target: str | None
    granted_by: str
    granted_at: datetime
    max_queries_per_minute: int = DEFAULT_MAX_QUERIES_PER_MINUTE
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS


@dataclass(frozen=True)
class DefinerFunction:
    function: str
    public_execute: bool
    config: tuple[str, ...]

    @property
    def pins_search_path(self) -> bool:
        return any(c.startswith("search_path=") for c in self.config)


async def grant_search(
    conn: AsyncConn,
    role: str,
    target: str | None = None,
    *,
    max_queries_per_minute: int = DEFAULT_MAX_QUERIES_PER_MINUTE,
    max_query_tokens: int = DEFAULT_MAX_QUERY_TOKENS,
) -> int:
    """Let ``role`` search ``target`` (or every target); returns the vector tables granted.

    The limits bound what the daemon embeds for the role's text queries from SQL: query
    embeddings reaching the provider per minute (cache hits are free) and tokens per query.
    Granting again replaces them.
    """
    if max_queries_per_minute < 0 or max_query_tokens < 1:
        raise ValidationError("max_queries_per_minute must be >= 0 and max_query_tokens >= 1")
    try:
        cur = await conn.execute(
            sqlfiles.query("privileges", "grant_search"),
            {
                "role": role,
                "target": target,
                "max_queries_per_minute": max_queries_per_minute,
                "max_query_tokens": max_query_tokens,
            },
        )
    except psycopg.errors.UndefinedObject as exc:
        raise ValidationError(
            f"{exc.diag.message_primary}: create it first (CREATE ROLE)"
        ) from None
    except psycopg.errors.NoDataFound:
        raise NotFoundError(f"no target named {target!r} (see 'syncsvc target list')") from None
    row = await cur.fetchone()
    assert row is not None
    return int(row["tables"])


async def revoke_search(conn: AsyncConn, role: str, target: str | None = None) -> None:
    """Take back what :func:`grant_search` gave (for one target, or all)."""
    await conn.execute(
        sqlfiles.query("privileges", "revoke_search"), {"role": role, "target": target}
    )


async def revoke_kept(conn: AsyncConn, target: Target) -> None:
    """A target removed with its vectors kept: the search roles lose their rights on what is
    kept, since the grant records that gave them go with the target (``revoke_search`` could
    never find those tables again)."""
    cur = await conn.execute(sqlfiles.query("privileges", "target_grantees"), {"id": target.id})
    roles = [str(r["role"]) for r in await cur.fetchall()]
    kept = [target.view_name, *(g.table_name for g in target.generations)]
    for name in kept:
        if await common.relation_oid(conn, "syncsvc", name) is None:
            continue
        for role in roles:
            await conn.execute(
                sql.SQL("REVOKE SELECT ON syncsvc.{} FROM {}").format(
                    sql.Identifier(name), sql.Identifier(role)
                )
            )


async def search_grants(conn: AsyncConn) -> list[SearchGrant]:
    cur = await conn.execute(sqlfiles.query("privileges", "list_search_grants"))
    return [SearchGrant(**row) for row in await cur.fetchall()]


async def definer_functions(conn: AsyncConn) -> list[DefinerFunction]:
    """syncsvc's SECURITY DEFINER functions: none may be executable by PUBLIC."""
    cur = await conn.execute(sqlfiles.query("privileges", "definer_functions"))
    return [
        DefinerFunction(r["function"], bool(r["public_execute"]), tuple(r["config"]))
        for r in await cur.fetchall()
    ]


async def function_acls(conn: AsyncConn) -> dict[str, bool]:
    """Every function of schema syncsvc (``regprocedure`` text) and whether PUBLIC may run it."""
    cur = await conn.execute(sqlfiles.query("privileges", "function_acls"))
    return {r["function"]: bool(r["public_execute"]) for r in await cur.fetchall()}
