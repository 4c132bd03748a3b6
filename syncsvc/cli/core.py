"""Core commands: migrate, run, status, failed."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from syncsvc.cli.context import (
    STATE,
    JsonFlag,
    console,
    emit,
    fail,
    print_error,
    run,
    with_connection,
)
from syncsvc.core.lazy import lazy_module
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles
from syncsvc.observe import status
from syncsvc.ops import migrate
from syncsvc.queue import failures

if TYPE_CHECKING:
    from syncsvc.ops import wiring as operations
else:  # metrics, Starlette and uvicorn load only when the daemon starts
    operations = lazy_module("syncsvc.ops.wiring")

failed_app = typer.Typer(help="Inspect and retry rows that failed to embed.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("migrate")(migrate_command)
    app.command("run")(run_command)
    app.command("status")(status_command)
    app.add_typer(failed_app, name="failed")


def migrate_command(
    sql: Annotated[
        bool, typer.Option("--sql", help="Print the DDL instead of running it.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Create or upgrade the syncsvc schema (idempotent)."""
    if sql:
        typer.echo(migrate.upgrade_sql())
        return
    url = STATE.url()
    migrate.upgrade(url, settings=STATE.settings)
    revisions = migrate.current(url)
    emit(
        as_json,
        {"up_to_date": True, "revisions": revisions},
        f"[green]schema is up to date[/] (revision {', '.join(revisions)})",
    )


def run_command(
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle",
            help="Exit once no row is queued and no job is running; exit 3 if paused targets "
            "still hold work.",
        ),
    ] = False,
    embedded: Annotated[
        bool,
        typer.Option("--embedded", help="Run on the embedded (demo) database on purpose."),
    ] = False,
    no_migrate: Annotated[
        bool,
        typer.Option(
            "--no-migrate",
            help="Do not migrate the schema; refuse to start unless it is current (replicas "
            "behind a migration Job).",
        ),
    ] = False,
) -> None:
    """Run the daemon: listen for changes, embed, sweep; SIGTERM/SIGINT stop it gracefully."""
    from syncsvc.core.runtime import tune_gc
    from syncsvc.daemon.process import Daemon

    if not STATE.settings.database_configured() and not embedded:
        # A daemon quietly embedding a demo database while production waits is worse than
        # not starting.
        raise fail(
            "no database configured for the daemon: set SYNCSVC_DATABASE_URL (or "
            "database_url in syncsvc.toml, or PG* variables), or pass --embedded to run on "
            "the embedded demo database"
        )
    url = STATE.url()
    if no_migrate:
        migrate.require_current(url)
    else:
        migrate.upgrade(url, settings=STATE.settings)
    tune_gc()

    left: list[str] = []

    async def main() -> None:
        daemon = Daemon(STATE.settings, url)
        operations.install(daemon)  # metrics, probes, admin page, shared budget, one scheduler
        daemon.install_signal_handlers()
        if until_idle:
            watch = _stop_when_idle(daemon, left)
            asyncio.get_running_loop().create_task(watch, name="idle-watch")
        await daemon.run()

    run(main())
    if left:
        # Idle, but not done: a script must not mistake held-back work for a finished sync.
        print_error("stopped with work left on paused targets: " + "; ".join(left))
        raise typer.Exit(3)


async def _stop_when_idle(daemon: object, left: list[str]) -> None:
    """Stop once nothing is left that this daemon can do; note what paused targets hold."""
    from syncsvc.daemon.process import Daemon

    assert isinstance(daemon, Daemon)
    await daemon.started.wait()
    while not daemon.stop_event.is_set():
        await asyncio.sleep(0.5)
        async with daemon.pool.connection() as conn:
            cur = await conn.execute(sqlfiles.query("ops", "outstanding_work"))
            row = await cur.fetchone()
            if row is None or row["n"] != 0:
                continue
            cur = await conn.execute(sqlfiles.query("ops", "paused_work"))
            left[:] = [
                f"{r['name']} ({r['queued']} rows queued; paused: {r['paused_reason']}; "
                f"resume with: syncsvc target resume {r['name']})"
                for r in await cur.fetchall()
            ]
        daemon.request_stop()


@with_connection
async def _status(conn: AsyncConn, as_json: bool) -> None:
    rows = await status.collect(conn)
    if as_json:
        typer.echo(json.dumps([r.as_dict() for r in rows], indent=2, default=str))
        return
    table = Table(title="syncsvc status")
    columns = ("target", "rows", "embedded", "pending", "in flight", "failed", "oldest", "rate")
    for column in (*columns, "ETA"):
        table.add_column(column, justify="left" if column == "target" else "right")
    table.add_column("active generation")
    table.add_column("paused")
    table.add_column("drift")
    for r in rows:
        generation = (
            f"{r.active_generation}: {r.model} ({r.dimensions})" if r.active_generation else "-"
        )
        table.add_row(
            r.target if r.capture == "triggers" else f"{r.target} ({r.capture})",
            str(r.rows),
            f"{r.embedded} ({status.percent(r.embedded, r.rows, 0)})",
            str(r.pending),
            str(r.in_flight),
            str(r.failed),
            status.seconds(r.oldest_pending_seconds),
            status.rate(r.rows_per_second),
            status.duration(r.eta_seconds) if r.pending or r.in_flight else "-",
            generation,
            r.paused_reason or "",
            r.drift or "",
        )
    console.print(table)
    wal = next((r for r in rows if r.capture == "wal"), None)
    if wal is not None:
        slot = await status.wal_slot(conn)
        line = (
            f"WAL slot {slot.slot}: retains {status.size(slot.retained_bytes)}, "
            f"{status.size(slot.lag_bytes)} behind"
            if slot.usable
            else f"[red]WAL slot {slot.slot} is missing or invalidated[/]: the WAL targets "
            "are paused until a daemon makes a new one and sweeps"
        )
        console.print(line, highlight=False)
    for idle in await status.unpromoted(conn, STATE.settings.jobs.unpromoted_grace_seconds):
        console.print(f"[yellow]warning:[/] {idle.warning()}", highlight=False)


def status_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Per target: rows, embedded, pending, in flight, failed, oldest pending, generation."""
    _status(as_json)


@with_connection
async def _failed_list(conn: AsyncConn, target: str | None, limit: int, as_json: bool) -> None:
    rows = await failures.list_failed(conn, target, limit)
    if as_json:
        from syncsvc.db.catalog import load_targets

        # One key shape everywhere: ``pk`` is {column: value}, as ``search --json`` prints it.
        columns = {t.name: t.pk_columns for t in await load_targets(conn)}
        out = [
            {**r.as_dict(), "pk": dict(zip(columns.get(r.target, ()), r.pk, strict=False))}
            for r in rows
        ]
        typer.echo(json.dumps(out, indent=2, default=str, ensure_ascii=False))
        return
    table = Table(title=f"failed rows ({len(rows)})")
    for column in ("target", "generation", "key", "attempts", "last error", "request id", "at"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.target,
            "-" if r.generation is None else str(r.generation),
            json.dumps(r.pk),
            str(r.attempts),
            r.last_error or "",
            r.request_id or "",
            str(r.updated_at)[:19],
        )
    console.print(table)


@failed_app.command("list")
def failed_list(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Rows that exhausted their attempts or were rejected by the API, with the error."""
    _failed_list(target, limit, as_json)


@with_connection
async def _failed_retry(conn: AsyncConn, target: str | None, wait: float, as_json: bool) -> None:
    if wait <= 0:
        retried = await failures.retry_failed(conn, target)
        emit(as_json, {"target": target, "retried": retried}, f"{retried} failed rows queued again")
        return
    outcome = await failures.retry_and_wait(conn, target, wait_seconds=wait)
    emit(as_json, {"target": target, **outcome.as_dict()}, outcome.describe())


@failed_app.command("retry")
def failed_retry(
    target: Annotated[str | None, typer.Option(help="Only this target.")] = None,
    wait: Annotated[
        float,
        typer.Option(
            help="Seconds to wait for the daemon to settle the retried rows, then report how "
            "many were embedded and how many failed again, and why (0: queue them and return)."
        ),
    ] = 30.0,
    as_json: JsonFlag = False,
) -> None:
    """Queue failed rows again with fresh attempts, and say what became of them."""
    _failed_retry(target, wait, as_json)
