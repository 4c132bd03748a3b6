"""``syncsvc reembed`` and ``jobs list|watch|pause|resume|cancel``."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from syncsvc import jobs
from syncsvc.cli.context import STATE, JsonFlag, YesFlag, confirm, console, emit, with_connection
from syncsvc.core.types import AsyncConn
from syncsvc.jobs.model import Job
from syncsvc.observe.status import duration, money, percent, rate
from syncsvc.ops import migrate

jobs_app = typer.Typer(help="Re-embedding jobs: progress, pause, resume, cancel.")


def register(app: typer.Typer) -> None:
    app.command("reembed")(reembed_command)
    app.add_typer(jobs_app, name="jobs")


def _describe(job: Job) -> str:
    total = "?" if job.total_rows is None else str(job.total_rows)
    failed = f", failed: {job.failed_rows}" if job.failed_rows else ""
    return (
        f"job {job.id} {job.state.value}: {job.target} → generation {job.generation_id} "
        f"({job.model}, {job.dimensions} dims), {job.done_rows}/{total} rows{failed}"
    )


@with_connection
async def _reembed(
    conn: AsyncConn,
    target: str,
    model: str,
    dimensions: int,
    provider: str | None,
    dry_run: bool,
    auto_promote: bool,
    max_queued: int | None,
    sparse: bool | None,
    as_json: bool,
) -> None:
    if dry_run:
        est = await jobs.estimate(
            conn, STATE.settings, target, model=model, dimensions=dimensions, provider=provider
        )
        approx = "≈ " if est.sampled else ""
        emit(
            as_json,
            {"dry_run": True, "estimate": est.as_dict()},
            f"dry run: re-embedding {est.target} with {est.provider}/{est.model} "
            f"({est.dimensions} dims) would embed {est.rows} rows, {approx}{est.tokens} tokens, "
            f"estimated cost {approx}${est.cost:.4f} at ${est.price_per_million_tokens}/1M "
            f"tokens, about {duration(est.seconds)} of embedding at "
            f"{jobs.ASSUMED_LATENCY * 1000:.0f} ms per request (or what the rpm/tpm budget "
            "allows). Nothing was created or spent.",
        )
        return
    job = await jobs.request_reembed(
        conn,
        STATE.settings,
        target,
        model=model,
        dimensions=dimensions,
        provider=provider,
        auto_promote=auto_promote,
        max_queued=max_queued,
        options=None if sparse is None else await jobs.options_with_sparse(conn, target, sparse),
    )
    then = (
        "it is promoted automatically"
        if auto_promote
        else (f"promote it with 'syncsvc promote {target} {job.generation_id}'")
    )
    est = await jobs.estimate(
        conn, STATE.settings, target, model=model, dimensions=dimensions, provider=job.provider
    )
    emit(
        as_json,
        {"job": job.as_dict(), "estimate": est.as_dict()},
        f"[green]job {job.id}[/] builds generation {job.generation_id} of {target} "
        f"({model}, {dimensions} dims): {est.rows} rows, about {est.tokens} tokens "
        f"(${est.cost:.4f}); a running daemon picks it up now. Watch it with "
        f"'syncsvc jobs watch {job.id}'; once complete, {then}.",
    )


def reembed_command(
    target: Annotated[str, typer.Argument(help="Target to re-embed.")],
    model: Annotated[str, typer.Option("--model", help="Model of the new generation.")],
    dimensions: Annotated[int, typer.Option("--dimensions", help="Its vector dimensions.")],
    provider: Annotated[
        str | None, typer.Option("--provider", help="Configured provider (default: current).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print rows, tokens and cost; change nothing.")
    ] = False,
    auto_promote: Annotated[
        bool, typer.Option("--auto-promote", help="Switch search over when complete.")
    ] = False,
    max_queued: Annotated[
        int | None,
        typer.Option("--max-queued", help="Rows queued at once (API share; default: config)."),
    ] = None,
    sparse: Annotated[
        bool | None,
        typer.Option(
            "--sparse/--no-sparse",
            help="Store DashScope sparse vectors too (default: as the active generation does).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Build a new generation of TARGET beside the active one (a model or dimensions change)."""
    migrate.upgrade(STATE.url(), settings=STATE.settings)
    _reembed(
        target, model, dimensions, provider, dry_run, auto_promote, max_queued, sparse, as_json
    )


@with_connection
async def _list(conn: AsyncConn, as_json: bool, open_only: bool) -> None:
    found = await jobs.list_jobs(conn, open_only=open_only)
    if as_json:
        typer.echo(json.dumps([j.as_dict() for j in found], indent=2, default=str))
        return
    table = Table(title="re-embedding jobs")
    for column in ("id", "target", "generation", "state", "done/total", "failed", "rate"):
        table.add_column(column, justify="right" if column in ("id", "rate", "failed") else "left")
    table.add_column("tokens", justify="right")
    table.add_column("cost", justify="right")
    table.add_column("ETA", justify="right")
    table.add_column("note")
    for j in found:
        total = "?" if j.total_rows is None else str(j.total_rows)
        table.add_row(
            str(j.id),
            j.target,
            f"{j.generation_id} {j.model}/{j.dimensions}",
            j.state.value,
            f"{j.done_rows}/{total} ({percent(j.done_rows, j.total_rows or 0, 0)})",
            str(j.failed_rows),
            rate(j.rate),
            str(j.tokens),
            money(j.cost),
            duration(j.eta_seconds),
            j.blocked or j.error or "",
        )
    console.print(table)


@jobs_app.command("list")
def list_command(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    open_only: Annotated[bool, typer.Option("--open", help="Only unfinished jobs.")] = False,
) -> None:
    """Jobs with done/total, rate, tokens spent, cost so far and ETA."""
    _list(as_json, open_only)


@with_connection
async def _watch(conn: AsyncConn, job_id: int, interval: float, as_json: bool) -> None:
    job = await jobs.get_job(conn, job_id)
    if as_json or not console.is_terminal:
        await _watch_lines(conn, job, interval, as_json)
        return
    columns = (
        TextColumn(f"job {job.id} {job.target} → g{job.generation_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("job", total=job.total_rows or None, detail="")
        while True:
            job = await jobs.get_job(conn, job_id)
            rate = f"{job.rate:.0f} rows/s" if job.rate else "-"
            bar.update(
                task,
                total=job.total_rows or None,
                completed=job.done_rows,
                detail=f"{job.state.value} {rate} {job.tokens} tokens ${job.cost:.4f} "
                f"ETA {duration(job.eta_seconds)}",
            )
            if not job.state.open:
                break
            await asyncio.sleep(interval)
    console.print(_describe(job) + (f" ({job.error})" if job.error else ""), highlight=False)


async def _watch_lines(conn: AsyncConn, job: Job, interval: float, as_json: bool) -> None:
    """Without a terminal (or with --json): one line per change of progress, then the final
    state; JSON lines carry the job as ``jobs list --json`` does."""
    last: tuple[object, ...] | None = None
    while True:
        seen = (job.state, job.done_rows, job.total_rows, job.error)
        if seen != last:
            last = seen
            if as_json:
                typer.echo(json.dumps(job.as_dict(), default=str, ensure_ascii=False))
            else:
                rate = f"{job.rate:.0f} rows/s" if job.rate else "-"
                total = job.total_rows if job.total_rows else "?"
                typer.echo(
                    f"job {job.id} {job.target} g{job.generation_id} {job.state.value} "
                    f"{job.done_rows}/{total} {rate} {job.tokens} tokens ${job.cost:.4f} "
                    f"ETA {duration(job.eta_seconds)}"
                )
        if not job.state.open:
            break
        await asyncio.sleep(interval)
        job = await jobs.get_job(conn, job.id)
    if not as_json:
        typer.echo(_describe(job) + (f" ({job.error})" if job.error else ""))


@jobs_app.command("watch")
def watch_command(
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line on each change.")
    ] = False,
) -> None:
    """A live progress bar until the job finishes (no terminal: a line on each change)."""
    _watch(job_id, interval, as_json)


@with_connection
async def _pause(conn: AsyncConn, job_id: int, as_json: bool) -> None:
    job = await jobs.pause_job(conn, job_id)
    emit(as_json, job.as_dict(), _describe(job) + "; queued rows were given back")


@jobs_app.command("pause")
def pause_command(
    job_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Stop feeding a job (rows already being embedded finish)."""
    _pause(job_id, as_json)


@with_connection
async def _resume(conn: AsyncConn, job_id: int, as_json: bool) -> None:
    job = await jobs.resume_job(conn, job_id)
    emit(as_json, job.as_dict(), _describe(job))


@jobs_app.command("resume")
def resume_command(
    job_id: Annotated[int, typer.Argument(metavar="ID")], as_json: JsonFlag = False
) -> None:
    """Continue a paused or failed job from its cursor."""
    _resume(job_id, as_json)


@with_connection
async def _cancel(conn: AsyncConn, job_id: int, drop: bool, as_json: bool) -> None:
    job = await jobs.cancel_job(conn, job_id, drop=drop)
    what = (
        "dropped with its table"
        if drop
        else f"cancelled (drop it with 'syncsvc generation drop {job.target} {job.generation_id}')"
    )
    emit(
        as_json,
        {**job.as_dict(), "generation_dropped": drop},
        f"job {job.id} cancelled: no request is sent for generation {job.generation_id} any "
        f"more; generation {job.generation_id} {what}",
    )


@jobs_app.command("cancel")
def cancel_command(
    job_id: Annotated[int, typer.Argument(metavar="ID")],
    drop: Annotated[
        bool, typer.Option("--drop", help="Also drop the generation's vector table.")
    ] = False,
    as_json: JsonFlag = False,
    yes: YesFlag = False,
) -> None:
    """Cancel a job: no request is sent for its generation once this returns (answers still in
    flight are discarded); the generation is kept as 'cancelled' until dropped (--drop: now).
    Asks first when stdin is a terminal (--yes: do not ask)."""
    confirm(f"cancel job {job_id}{' and drop its generation' if drop else ''}?", yes)
    _cancel(job_id, drop, as_json)
