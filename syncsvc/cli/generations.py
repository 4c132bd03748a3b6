"""``syncsvc promote`` and ``generation list|drop``: a target's vector spaces."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from syncsvc.cli.context import STATE, JsonFlag, YesFlag, confirm, console, emit, with_connection
from syncsvc.core.types import AsyncConn
from syncsvc.daemon import actions
from syncsvc.observe.status import percent
from syncsvc.store import promote

generation_app = typer.Typer(help="A target's generations (vector spaces).")


def register(app: typer.Typer) -> None:
    app.command("promote")(promote_command)
    app.add_typer(generation_app, name="generation")


@with_connection
async def _promote(
    conn: AsyncConn,
    target: str,
    generation: str,
    force: bool,
    accept_failed: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    done = await promote.promote(
        conn,
        target,
        generation,
        force=force,
        accept_failed=accept_failed,
        max_failed=STATE.settings.jobs.promote_max_failed,
        dry_run=dry_run,
    )
    g = done.generation
    if done.dry_run:
        emit(
            as_json,
            actions.promotion_result(done),
            f"dry run: {target} would search generation {g.id} ({g.model}, {g.dimensions} "
            f"dims) with {done.coverage.describe()}; nothing was switched",
        )
        return
    previous = f"; generation {done.previous.id} retired" if done.previous else ""
    emit(
        as_json,
        actions.promotion_result(done),
        f"[green]{target}[/] now searches generation {g.id} ({g.model}, {g.dimensions} dims), "
        f"{done.coverage.describe()}{previous}",
    )


def promote_command(
    target: Annotated[str, typer.Argument()],
    generation: Annotated[str, typer.Argument(help="Generation id (or key).")],
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if incomplete, failed or cancelled.")
    ] = False,
    accept_failed: Annotated[
        bool,
        typer.Option(
            "--accept-failed",
            help="Promote although some rows failed for good (they have no "
            "vector there; 'syncsvc failed list').",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and print the coverage; switch nothing.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Atomically switch TARGET's view (its search) to GENERATION, once every row has a current
    vector there (see docs/operations.md, "When promote is allowed")."""
    _promote(target, generation, force, accept_failed, dry_run, as_json)


@with_connection
async def _generations(conn: AsyncConn, target: str, as_json: bool) -> None:
    found = await promote.generation_coverage(conn, target)
    if as_json:
        out = [found_one.as_dict() for found_one in found]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title=f"generations of {target}")
    for column in (
        "id",
        "state",
        "provider/model",
        "dims",
        "table",
        "current/rows",
        "missing",
        "failed",
    ):
        table.add_column(column)
    for g, c in ((f.generation, f.coverage) for f in found):
        table.add_row(
            str(g.id),
            g.state.value,
            f"{g.provider}/{g.model}",
            str(g.dimensions),
            f"syncsvc.{g.table_name}",
            f"{c.current}/{c.rows} ({percent(c.current, c.rows, 0)})",
            str(c.missing),
            str(c.failed),
        )
    console.print(table)


@generation_app.command("list")
def generation_list(
    target: Annotated[str, typer.Argument()],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Every generation of TARGET with its state and coverage."""
    _generations(target, as_json)


@with_connection
async def _drop(conn: AsyncConn, target: str, generation: str, as_json: bool) -> None:
    dropped = await promote.drop_generation(conn, target, generation)
    emit(
        as_json,
        {"target": target, "generation": dropped.id, "table": f"syncsvc.{dropped.table_name}"},
        f"generation {dropped.id} of {target} dropped (syncsvc.{dropped.table_name})",
    )


@generation_app.command("drop")
def generation_drop(
    target: Annotated[str, typer.Argument()],
    generation: Annotated[str, typer.Argument(help="Generation id (or key).")],
    as_json: JsonFlag = False,
    yes: YesFlag = False,
) -> None:
    """Drop a retired, cancelled, failed or building generation and its vectors (never the
    active one; a building one's job goes with it). Asks first when stdin is a terminal
    (--yes: do not ask)."""
    confirm(f"drop generation {generation} of {target} and its vectors?", yes)
    _drop(target, generation, as_json)
