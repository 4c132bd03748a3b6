"""``syncsvc grant search|list`` and ``syncsvc revoke search``: who may search which target."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from syncsvc.cli.context import JsonFlag, console, emit, with_connection
from syncsvc.core.types import AsyncConn
from syncsvc.db import privileges

grant_app = typer.Typer(help="Give roles the rights search needs.", no_args_is_help=True)
revoke_app = typer.Typer(help="Take back what 'grant' gave.", no_args_is_help=True)

TargetOption = Annotated[
    str | None, typer.Option("--target", "-t", help="Only this target (default: every target).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(grant_app, name="grant")
    app.add_typer(revoke_app, name="revoke")


@with_connection
async def _grant(
    conn: AsyncConn,
    role: str,
    target: str | None,
    per_minute: int,
    max_tokens: int,
    as_json: bool,
) -> None:
    tables = await privileges.grant_search(
        conn, role, target, max_queries_per_minute=per_minute, max_query_tokens=max_tokens
    )
    scope = f"target {target}" if target else "every target (also those added later)"
    emit(
        as_json,
        {
            "role": role,
            "target": target,
            "vector_tables": tables,
            "max_queries_per_minute": per_minute,
            "max_query_tokens": max_tokens,
        },
        f"role {role} may search {scope}: {tables} vector table(s) granted; the grant is kept "
        "across promote, re-embeds and migrate. It also needs SELECT on the source table(s) "
        f"for filters and rows. Text queries from SQL: at most {per_minute} embedded per "
        f"minute (cached ones are free), each at most {max_tokens} tokens.",
    )


@grant_app.command("search")
def grant_search(
    role: str,
    target: TargetOption = None,
    max_queries_per_minute: Annotated[
        int,
        typer.Option(
            min=0,
            help="Query embeddings from SQL the daemon makes for ROLE per minute (cache hits "
            "are free; 0: cached queries only).",
        ),
    ] = privileges.DEFAULT_MAX_QUERIES_PER_MINUTE,
    max_query_tokens: Annotated[
        int, typer.Option(min=1, help="Longest query ROLE may have embedded, in tokens.")
    ] = privileges.DEFAULT_MAX_QUERY_TOKENS,
    as_json: JsonFlag = False,
) -> None:
    """Give ROLE exactly what search needs (schema usage, catalog, caches, vectors, views)."""
    _grant(role, target, max_queries_per_minute, max_query_tokens, as_json)


@with_connection
async def _list(conn: AsyncConn, as_json: bool) -> None:
    grants = await privileges.search_grants(conn)
    if as_json:
        rows = [
            {
                "role": g.role,
                "target": g.target,
                "granted_by": g.granted_by,
                "granted_at": g.granted_at.isoformat(),
                "max_queries_per_minute": g.max_queries_per_minute,
                "max_query_tokens": g.max_query_tokens,
            }
            for g in grants
        ]
        console.print_json(json.dumps(rows))
        return
    if not grants:
        console.print("no role has been granted search (syncsvc grant search ROLE)")
    for g in grants:
        console.print(
            f"{g.role}: {g.target or 'every target'} ({g.max_queries_per_minute} queries/min, "
            f"{g.max_query_tokens} tokens/query)",
            highlight=False,
        )


@grant_app.command("list")
def grant_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Roles that may search, and which targets."""
    _list(as_json)


@with_connection
async def _revoke(conn: AsyncConn, role: str, target: str | None, as_json: bool) -> None:
    await privileges.revoke_search(conn, role, target)
    emit(
        as_json,
        {"role": role, "target": target, "revoked": True},
        f"role {role} may no longer search {target or 'any target'}",
    )


@revoke_app.command("search")
def revoke_search(role: str, target: TargetOption = None, as_json: JsonFlag = False) -> None:
    """Take back search rights given by 'syncsvc grant search'."""
    _revoke(role, target, as_json)
