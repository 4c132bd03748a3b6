"""``syncsvc search``, ``syncsvc index build|list|drop`` and ``syncsvc query-cache``."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import TYPE_CHECKING, Annotated, Any

import psycopg
import typer
from rich.table import Table

from syncsvc.cli.context import STATE, JsonFlag, console, emit, fail, with_connection
from syncsvc.core.lazy import lazy_module
from syncsvc.core.models import Target
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import find_generation, get_target, load_targets
from syncsvc.providers.registry import build_provider

if TYPE_CHECKING:
    from syncsvc.search import engine as search_module
    from syncsvc.search.engine import SearchHit
    from syncsvc.store import indexes
else:  # numpy (through pgvector) loads only when a search runs
    search_module = lazy_module("syncsvc.search.engine")
    indexes = lazy_module("syncsvc.store.indexes")

index_app = typer.Typer(help="HNSW indexes of generations.", no_args_is_help=True)
cache_app = typer.Typer(help="The cache of embedded search queries.", no_args_is_help=True)

CELL_WIDTH = 60
MISSING_SCHEMA = "the search functions are not installed; run 'syncsvc migrate' first"


def register(app: typer.Typer) -> None:
    app.command("search")(search_command)
    app.add_typer(index_app, name="index")
    app.add_typer(cache_app, name="query-cache")


def _cell(value: Any) -> str:
    text = " ".join(str(value).split()) if value is not None else ""
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _print_table(target: Target, hits: list[SearchHit], hybrid: bool) -> None:
    table = Table(show_lines=False)
    table.add_column("#", justify="right")
    table.add_column("score" if hybrid else "distance", justify="right")
    for column in target.pk_columns:
        table.add_column(column)
    shown = [c for c in target.columns if c not in target.pk_columns]
    for column in shown:
        table.add_column(column, overflow="fold")
    for rank, hit in enumerate(hits, 1):
        measure = hit.score if hybrid else hit.distance
        table.add_row(
            str(rank),
            "" if measure is None else f"{measure:.4f}",
            *(_cell(hit.pk.get(c)) for c in target.pk_columns),
            *(_cell(hit.row.get(c)) for c in shown),
        )
    console.print(table)


def _key(text: str) -> Any:
    """A key from the command line: JSON (42, [1, "a"], {"id": 42}) or else a bare string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@with_connection
async def _search(
    conn: AsyncConn,
    target_name: str,
    text: str,
    k: int,
    where: str | None,
    as_json: bool,
    hybrid: bool,
    like: str | None,
) -> None:
    target = await get_target(conn, target_name)
    try:
        if like is not None:
            hits = await search_module.similar_rows(conn, target, _key(like), k=k, where=where)
        else:
            generation = search_module.active_generation(target)
            provider = build_provider(generation.provider, STATE.settings)
            try:
                query = await search_module.embed_query(conn, provider, target, text, generation)
            finally:
                await provider.aclose()
            hits = await search_module.search_vector(
                conn, target, query, k=k, where=where, hybrid_text=text if hybrid else None
            )
    except psycopg.errors.UndefinedFunction as exc:
        raise fail(f"{MISSING_SCHEMA} ({exc})") from None
    if as_json:
        out = [{"pk": h.pk, "distance": h.distance, "score": h.score, "row": h.row} for h in hits]
        typer.echo(json.dumps(out, default=str, ensure_ascii=False))
        return
    if not hits:
        console.print("no rows found")
        return
    _print_table(target, hits, hybrid)


def search_command(
    target: Annotated[str, typer.Argument(help="Target name.")],
    text: Annotated[str, typer.Argument(help="What to look for.")] = "",
    k: Annotated[int, typer.Option("-k", "--limit", min=1, max=10000, help="Rows to return.")] = 10,
    where: Annotated[
        str | None,
        typer.Option("--where", help='SQL filter over the source row (alias s): "s.price < 10"'),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    hybrid: Annotated[
        bool, typer.Option("--hybrid", help="Fuse with sparse or full-text matches (RRF).")
    ] = False,
    like: Annotated[
        str | None,
        typer.Option("--like", help="Rows similar to this stored row's key (JSON: 42, [1,2])."),
    ] = None,
) -> None:
    """Find the rows of TARGET nearest in meaning to TEXT (the query vector is cached)."""
    if like is None and not text.strip():
        raise typer.BadParameter("give the TEXT to search for, or --like KEY")
    _search(target, text, k, where, as_json, hybrid, like)


@with_connection
async def _build(
    conn: AsyncConn,
    target_name: str,
    generation_ref: str | None,
    rebuild: bool,
    m: int | None,
    ef_construction: int | None,
    as_json: bool,
) -> None:
    target = await get_target(conn, target_name)
    if generation_ref is not None:
        chosen = [find_generation(target, generation_ref)]
    else:
        chosen = list(target.live_generations)
    settings = STATE.settings.search.model_copy(
        update={
            k: v
            for k, v in (("hnsw_m", m), ("hnsw_ef_construction", ef_construction))
            if v is not None
        }
    )
    built = []
    for generation in chosen:
        info = await indexes.build_index(conn, target, generation, settings, rebuild=rebuild)
        built.append({"generation": generation.id, **dataclasses.asdict(info)})
        if not as_json:
            console.print(f"[green]{info.name}[/] ({info.bytes / 1e6:.1f} MB): {info.definition}")
    if as_json:
        emit(True, {"target": target.name, "indexes": built}, "")


@index_app.command("build")
def build_command(
    target: Annotated[str, typer.Argument(help="Target name.")],
    generation: Annotated[
        str | None, typer.Option("--generation", help="Generation id or key (default: live ones).")
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Build anew (e.g. new parameters), then swap.")
    ] = False,
    m: Annotated[int | None, typer.Option("--m", min=2, max=100)] = None,
    ef_construction: Annotated[
        int | None, typer.Option("--ef-construction", min=4, max=1000)
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Build the HNSW index of a target's generations now (CREATE INDEX CONCURRENTLY)."""
    _build(target, generation, rebuild, m, ef_construction, as_json)


@with_connection
async def _list(conn: AsyncConn, as_json: bool) -> None:
    rows: list[dict[str, Any]] = []
    for target in await load_targets(conn):
        for generation in target.generations:
            info = await indexes.index_info(conn, generation)
            done = await indexes.progress(conn, target, generation)
            rows.append(
                {
                    "target": target.name,
                    "generation": generation.id,
                    "state": generation.state.value,
                    "dimensions": generation.dimensions,
                    "metric": target.metric.value,
                    "index": info.name if info else None,
                    "valid": info.valid if info else None,
                    "bytes": info.bytes if info else None,
                    "backfilled": round(done.fraction(), 4),
                }
            )
    if as_json:
        typer.echo(json.dumps(rows))
        return
    table = Table()
    for column in (
        "target",
        "generation",
        "state",
        "dims",
        "metric",
        "index",
        "size",
        "backfilled",
    ):
        table.add_column(column)
    for r in rows:
        index = "—" if r["index"] is None else r["index"] + ("" if r["valid"] else " (INVALID)")
        size = "" if r["bytes"] is None else f"{r['bytes'] / 1e6:.1f} MB"
        table.add_row(
            r["target"],
            str(r["generation"]),
            r["state"],
            str(r["dimensions"]),
            r["metric"],
            index,
            size,
            f"{r['backfilled']:.0%}",
        )
    console.print(table)


@index_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every generation with its index and backfill progress."""
    _list(as_json)


@with_connection
async def _drop(conn: AsyncConn, target_name: str, generation_ref: str, as_json: bool) -> None:
    target = await get_target(conn, target_name)
    generation = find_generation(target, generation_ref)
    dropped = await indexes.drop_index(conn, generation)
    emit(
        as_json,
        {"target": target.name, "generation": generation.id, "dropped": dropped},
        "dropped" if dropped else "no index to drop",
    )


@index_app.command("drop")
def drop_command(
    target: Annotated[str, typer.Argument(help="Target name.")],
    generation: Annotated[str, typer.Option("--generation", help="Generation id or key.")],
    as_json: JsonFlag = False,
) -> None:
    """Drop a generation's index (DROP INDEX CONCURRENTLY); the daemon may build it again."""
    _drop(target, generation, as_json)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``600s`` or plain seconds, in seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not an age like 30d, 12h, 90m or 600s")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


@with_connection
async def _cache_stats(conn: AsyncConn, as_json: bool) -> None:
    rows = await search_module.cache_stats(conn)
    if as_json:
        print(json.dumps(rows, default=str))
        return
    table = Table()
    for column in ("generation", "entries", "hits", "last used"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            str(r["generation_id"]), str(r["entries"]), str(r["hits"]), str(r["last_used_at"])
        )
    console.print(table)


@cache_app.command("stats")
def cache_stats_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Cached query vectors per generation, with their hits."""
    _cache_stats(as_json)


@with_connection
async def _cache_prune(conn: AsyncConn, seconds: float, as_json: bool) -> None:
    removed = await search_module.prune_cache(conn, seconds)
    emit(
        as_json,
        {"removed": removed, "older_than_seconds": seconds},
        f"removed {removed} cached query vector(s) unused for {seconds:g}s",
    )


@cache_app.command("prune")
def cache_prune_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Unused for at least this long: 30d, 12h, 90m.")
    ] = "30d",
    as_json: JsonFlag = False,
) -> None:
    """Forget cached query vectors nobody has searched for in a while."""
    _cache_prune(parse_age(older_than), as_json)
