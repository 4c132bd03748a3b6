"""``syncsvc target add|list|remove``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from syncsvc import migrate, targets
from syncsvc.catalog import load_targets
from syncsvc.cli.context import STATE, console, with_connection
from syncsvc.database import AsyncConn
from syncsvc.models import Metric

target_app = typer.Typer(help="Register source tables to keep embedded.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(target_app, name="target")


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


@with_connection
async def _add(conn: AsyncConn, spec: targets.TargetSpec) -> None:
    target = await targets.add_target(conn, STATE.settings, spec)
    generation = target.active
    assert generation is not None
    console.print(
        f"[green]target {target.name}[/] on {target.source_schema}.{target.source_table}: "
        f"key ({', '.join(target.pk_columns)}), columns {', '.join(target.columns)}, "
        f"generation {generation.id} = {generation.model} {generation.dimensions} dims "
        f"→ view syncsvc.{target.view_name}. Existing rows are embedded by 'syncsvc run'.",
        highlight=False,
    )


@target_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Target name (lower case, digits, _).")],
    table: Annotated[str, typer.Option("--table", help="[schema.]table")],
    columns: Annotated[str, typer.Option("--columns", help="Text columns to embed: title,body")],
    model: Annotated[str, typer.Option("--model")] = "local-hash",
    dimensions: Annotated[int | None, typer.Option("--dimensions")] = None,
    provider: Annotated[str, typer.Option("--provider")] = "local-hash",
    template: Annotated[
        str | None, typer.Option("--template", help='e.g. "{title}\\n\\n{body}"')
    ] = None,
    pk: Annotated[
        str | None, typer.Option("--pk", help="Key columns if not the primary key")
    ] = None,
    metric: Annotated[Metric, typer.Option("--metric")] = Metric.COSINE,
    sparse: Annotated[
        bool,
        typer.Option(
            "--sparse",
            help="Also store DashScope sparse vectors (native profiles) for hybrid search.",
        ),
    ] = False,
) -> None:
    """Register a table: validate, create its vector table and view, install triggers."""
    migrate.upgrade(STATE.url())
    spec = targets.TargetSpec(
        name=name,
        table=table,
        columns=_split(columns) or (),
        model=model,
        dimensions=dimensions,
        provider=provider,
        template=template.encode().decode("unicode_escape") if template else None,
        pk=_split(pk),
        metric=metric,
        options={"sparse": True} if sparse else {},
    )
    _add(spec)


@with_connection
async def _list(conn: AsyncConn, as_json: bool) -> None:
    rows = await load_targets(conn)
    if as_json:
        out = [
            {
                "name": t.name,
                "table": f"{t.source_schema}.{t.source_table}",
                "key": list(t.pk_columns),
                "columns": list(t.columns),
                "template": t.template,
                "paused_reason": t.paused_reason,
                "generations": [
                    {"id": g.id, "state": g.state.value, "model": g.model, "dims": g.dimensions}
                    for g in t.generations
                ],
            }
            for t in rows
        ]
        typer.echo(json.dumps(out, indent=2))
        return
    table = Table(title="targets")
    for column in ("name", "table", "key", "columns", "generations"):
        table.add_column(column)
    for t in rows:
        gens = ", ".join(f"{g.id} {g.state.value} {g.model}/{g.dimensions}" for g in t.generations)
        table.add_row(
            t.name,
            f"{t.source_schema}.{t.source_table}",
            ",".join(t.pk_columns),
            ",".join(t.columns),
            gens,
        )
    console.print(table)


@target_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered targets and their generations."""
    _list(as_json)


@with_connection
async def _remove(conn: AsyncConn, name: str, keep_vectors: bool) -> None:
    await targets.remove_target(conn, name, keep_vectors=keep_vectors)
    kept = " (vector tables kept)" if keep_vectors else ""
    console.print(f"target {name} removed{kept}")


@target_app.command("remove")
def remove(
    name: str,
    keep_vectors: Annotated[
        bool, typer.Option("--keep-vectors", help="Keep the vector tables.")
    ] = False,
) -> None:
    """Drop a target's triggers (and its vectors unless --keep-vectors)."""
    _remove(name, keep_vectors)
