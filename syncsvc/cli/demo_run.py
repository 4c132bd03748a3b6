"""``syncsvc demo``: the whole product in one minute on the embedded defaults.

Creates a sample table of real articles, registers it, runs the daemon until caught up (with a
progress bar), shows live edits reaching their vectors, and finishes with similarity queries.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncsvc.capture import targets
from syncsvc.core.models import Target, content_hash
from syncsvc.core.resources import data_path
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon.process import Daemon
from syncsvc.db import quoting
from syncsvc.db.catalog import load_targets
from syncsvc.db.database import aconnect
from syncsvc.embed.profiles import WORDLLAMA_MODEL
from syncsvc.ops import migrate
from syncsvc.search import engine as search

SCHEMA = "syncsvc_demo"
TARGET = "demo_articles"


@dataclass(frozen=True)
class DemoOptions:
    # A real model that ships with syncsvc: searches match meaning, not only shared words.
    provider: str = "local"
    model: str = WORDLLAMA_MODEL
    dimensions: int | None = None
    timeout_seconds: float = 300.0


def load_articles() -> list[dict[str, str]]:
    lines = data_path("articles.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


async def _prepare(conn: AsyncConn, settings: Settings, options: DemoOptions) -> Target:
    if any(t.name == TARGET for t in await load_targets(conn)):
        await targets.remove_target(conn, TARGET)
    await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(quoting.ident(SCHEMA)))
    await conn.execute(sql.SQL("CREATE SCHEMA {}").format(quoting.ident(SCHEMA)))
    await conn.execute(
        sql.SQL(
            "CREATE TABLE {}.articles (id serial PRIMARY KEY, title text NOT NULL, "
            "body text NOT NULL, category text NOT NULL, views int NOT NULL DEFAULT 0)"
        ).format(quoting.ident(SCHEMA))
    )
    async with conn.cursor() as cur:
        await cur.executemany(
            sql.SQL(
                "INSERT INTO {}.articles (title, body, category) "
                "VALUES (%(title)s, %(body)s, %(category)s)"
            ).format(quoting.ident(SCHEMA)),
            [
                {"title": a["title"], "body": a["body"], "category": a["category"]}
                for a in load_articles()
            ],
        )
    spec = targets.TargetSpec(
        name=TARGET,
        table=f"{SCHEMA}.articles",
        columns=("title", "body"),
        template="{title}\n\n{body}",
        provider=options.provider,
        model=options.model,
        dimensions=options.dimensions,
    )
    return await targets.add_target(conn, settings, spec)


async def _count(conn: AsyncConn, target: Target) -> int:
    view = quoting.ident("syncsvc", target.view_name)
    cur = await conn.execute(sql.SQL("SELECT count(*) AS n FROM {} WHERE chunk = 0").format(view))
    row = await cur.fetchone()
    return int(row["n"]) if row else 0


async def _stored_hash(conn: AsyncConn, target: Target, pk: int) -> bytes | None:
    view = quoting.ident("syncsvc", target.view_name)
    cur = await conn.execute(
        sql.SQL("SELECT content_hash FROM {} WHERE id = %(id)s AND chunk = 0").format(view),
        {"id": pk},
    )
    row = await cur.fetchone()
    return bytes(row["content_hash"]) if row else None


async def _wait_until_current(
    conn: AsyncConn, target: Target, pk: int, text: str, timeout: float
) -> float:
    generation = target.active
    assert generation is not None
    wanted = content_hash(generation.key, text)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if await _stored_hash(conn, target, pk) == wanted:
            return time.monotonic() - started
        await asyncio.sleep(0.01)
    raise TimeoutError(f"row {pk} was not re-embedded within {timeout:.0f}s")


async def _search(
    conn: AsyncConn, daemon: Daemon, target: Target, query: str, k: int = 5
) -> list[dict[str, Any]]:
    """The same search ``syncsvc search`` runs: the query embedded (and cached) as a query,
    then the k nearest rows of the active generation."""
    generation = search.active_generation(target)
    provider = daemon.worker.provider(generation.provider)
    vector = await search.embed_query(conn, provider, target, query, generation)
    hits = await search.search_vector(conn, target, vector, k=k)
    return [
        {
            "id": hit.pk["id"],
            "title": hit.row["title"],
            "category": hit.row["category"],
            "distance": hit.distance,
        }
        for hit in hits
    ]


async def run_demo(settings: Settings, url: str, console: Console, options: DemoOptions) -> None:
    """Run the demo end to end; raises on any failure so the CLI exits non-zero."""
    migrate.upgrade(url, settings=settings)
    conn = await aconnect(url)
    try:
        target = await _prepare(conn, settings, options)
        total = len(load_articles())
        generation = target.active
        assert generation is not None
        console.print(
            f"[bold]1.[/] Created [cyan]{SCHEMA}.articles[/] with {total} articles and registered "
            f"target [cyan]{TARGET}[/] ({generation.provider} · {generation.model} · "
            f"{generation.dimensions} dims).",
            highlight=False,
        )
        daemon = Daemon(settings, url)
        task = asyncio.create_task(daemon.run(), name="demo-daemon")
        try:
            await _backfill(conn, daemon, target, total, console, options.timeout_seconds, task)
            await _live_edits(conn, target, console, options.timeout_seconds)
            await _queries(conn, daemon, target, console)
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 60)
        embedded = not settings.database_configured()
        console.print(
            f"\n[bold green]Done.[/] Vectors live in [cyan]syncsvc.{target.view_name}[/]; run "
            f"'syncsvc run{' --embedded' if embedded else ''}' to keep them current, "
            "'syncsvc status' to watch."
            + (
                " 'syncsvc embedded stop' stops the embedded PostgreSQL (its data is kept)."
                if embedded
                else ""
            ),
            highlight=False,
        )
    finally:
        await conn.close()


async def _backfill(
    conn: AsyncConn,
    daemon: Daemon,
    target: Target,
    total: int,
    console: Console,
    timeout: float,
    task: asyncio.Task[None],
) -> None:
    console.print("[bold]2.[/] Running the daemon until every row is embedded:")
    started = time.monotonic()
    columns = (
        TextColumn("  embedding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("rows", total=total)
        done = 0
        while done < total:
            if task.done():
                task.result()  # the daemon died: surface why
                raise RuntimeError("the daemon stopped before the backfill finished")
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"backfill not finished after {timeout:.0f}s")
            done = await _count(conn, target)
            progress.update(bar, completed=done)
            await asyncio.sleep(0.1)
    rate = total / max(time.monotonic() - started, 1e-6)
    console.print(f"   {total} rows embedded ({rate:.0f} rows/s).")


async def _live_edits(conn: AsyncConn, target: Target, console: Console, timeout: float) -> None:
    console.print("[bold]3.[/] Live changes (triggers + LISTEN/NOTIFY):")
    table = sql.SQL("{}.articles").format(quoting.ident(SCHEMA))
    title, body = (
        "Comet sighted over the Atacama desert",
        "Astronomers at a Chilean observatory tracked a bright comet with a long dust tail "
        "across the night sky, measuring its orbit around the Sun.",
    )
    cur = await conn.execute(
        sql.SQL(
            "INSERT INTO {} (title, body, category) "
            "VALUES (%(title)s, %(body)s, 'astronomy') RETURNING id"
        ).format(table),
        {"title": title, "body": body},
    )
    row = await cur.fetchone()
    assert row is not None
    new_id = int(row["id"])
    seconds = await _wait_until_current(conn, target, new_id, f"{title}\n\n{body}", timeout)
    console.print(f"   inserted article {new_id}: its vector was written {seconds:.2f}s later")

    edited_body = "A slow-cooked tomato sauce with garlic, basil and olive oil for fresh pasta."
    cur = await conn.execute(
        sql.SQL("UPDATE {} SET body = %(body)s WHERE id = 1 RETURNING title").format(table),
        {"body": edited_body},
    )
    row = await cur.fetchone()
    assert row is not None
    seconds = await _wait_until_current(
        conn, target, 1, f"{row['title']}\n\n{edited_body}", timeout
    )
    console.print(f"   edited article 1: its vector was replaced {seconds:.2f}s later")
    await conn.execute(sql.SQL("UPDATE {} SET views = views + 1").format(table))
    console.print("   bumped a non-embedded column on every row: nothing queued, no API call")


async def _queries(conn: AsyncConn, daemon: Daemon, target: Target, console: Console) -> None:
    console.print("[bold]4.[/] Similarity search (cosine distance, active generation):")
    queries = json.loads(data_path("demo_queries.json").read_text(encoding="utf-8"))[:3]
    for query in queries:
        hits = await _search(conn, daemon, target, query["query"])
        table = Table(title=f"“{query['query']}”", title_justify="left")
        table.add_column("id", justify="right")
        table.add_column("title")
        table.add_column("category")
        table.add_column("distance", justify="right")
        for hit in hits:
            table.add_row(str(hit["id"]), hit["title"], hit["category"], f"{hit['distance']:.3f}")
        console.print(table)
