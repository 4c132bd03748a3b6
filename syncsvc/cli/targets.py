"""``syncsvc target add|list|remove``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from syncsvc.capture import drift, partitions, targets
from syncsvc.cli.context import (
    STATE,
    JsonFlag,
    YesFlag,
    confirm,
    console,
    emit,
    fail,
    with_connection,
)
from syncsvc.core.models import Capture, Metric
from syncsvc.core.types import AsyncConn
from syncsvc.daemon import actions
from syncsvc.db.catalog import load_targets
from syncsvc.embed.chunking import Chunking
from syncsvc.ops import migrate
from syncsvc.providers.registry import BUILTINS, LOCAL_MODEL, provider_profile

target_app = typer.Typer(help="Register source tables to keep embedded.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(target_app, name="target")


def _split(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(part.strip() for part in value.split(",") if part.strip())


_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def _template(text: str) -> str:
    """Interpret ``\\n``, ``\\t`` and ``\\\\`` as a shell user means them; every other
    character, any Unicode, stays exactly as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            out.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _options(
    sparse: bool, chunk_tokens: int | None, overlap: int, markdown: bool
) -> dict[str, object]:
    options: dict[str, object] = {"sparse": True} if sparse else {}
    if chunk_tokens is not None:
        options["chunking"] = Chunking(chunk_tokens, overlap, markdown).as_option()
    return options


def _provider_and_model(provider: str | None, model: str | None) -> tuple[str, str]:
    settings = STATE.settings
    if provider is None:
        if settings.database_configured():
            known = ", ".join(sorted({*BUILTINS, *settings.providers}))
            raise fail(
                f"name the provider: --provider NAME (configured: {known}); on your own "
                "database syncsvc never picks one for you"
            )
        provider = LOCAL_MODEL
    if model is None:
        profile = provider_profile(provider, settings)
        if len(profile.models) != 1 or profile.generic_model is not None:
            offered = ", ".join(sorted(profile.models)) or "any model its host serves"
            raise fail(f"name the model: --model NAME (provider {provider} offers {offered})")
        model = next(iter(profile.models))
    return provider, model


@with_connection
async def _add(conn: AsyncConn, spec: targets.TargetSpec, as_json: bool) -> None:
    target = await targets.add_target(conn, STATE.settings, spec)
    generation = target.active
    assert generation is not None
    emit(
        as_json,
        actions.target_result(target),
        f"[green]target {target.name}[/] on {target.source_schema}.{target.source_table}: "
        f"key ({', '.join(target.pk_columns)}), columns {', '.join(target.columns)}, "
        f"generation {generation.id} = {generation.model} {generation.dimensions} dims "
        f"→ view syncsvc.{target.view_name}, capture {target.capture.value}. Existing rows "
        "are embedded by 'syncsvc run'.",
    )


@target_app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Target name (lower case, digits, _).")],
    table: Annotated[str, typer.Option("--table", help="[schema.]table")],
    columns: Annotated[str, typer.Option("--columns", help="Text columns to embed: title,body")],
    model: Annotated[
        str | None, typer.Option("--model", help="Default: the provider's only model.")
    ] = None,
    dimensions: Annotated[int | None, typer.Option("--dimensions")] = None,
    provider: Annotated[
        str | None,
        typer.Option(
            "--provider",
            help="A configured provider; required on your own database (the embedded demo "
            "database defaults to the offline 'local' model).",
        ),
    ] = None,
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
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Validate and print the text of a few rows; change nothing."
        ),
    ] = False,
    embed_labels: Annotated[
        bool,
        typer.Option(
            "--embed-labels",
            help="Embed rows whose columns are all empty too, as the template's labels alone.",
        ),
    ] = False,
    chunk_tokens: Annotated[
        int | None,
        typer.Option(
            "--chunk-tokens",
            help="Split each row into chunks of at most N tokens (paragraph, sentence, token "
            "boundaries), one vector each; edits re-embed only the chunks that changed.",
        ),
    ] = None,
    chunk_overlap: Annotated[
        int, typer.Option("--chunk-overlap", help="Tokens a chunk repeats from the last one.")
    ] = 0,
    chunk_markdown: Annotated[
        bool, typer.Option("--chunk-markdown", help="A markdown heading starts a new chunk.")
    ] = False,
    capture: Annotated[
        Capture,
        typer.Option(
            "--capture",
            help="triggers (default: works everywhere) or wal (logical decoding: no trigger "
            "on the table; needs wal_level=logical and a REPLICATION role).",
        ),
    ] = Capture.TRIGGERS,
    as_json: JsonFlag = False,
) -> None:
    """Register a table: validate, create its vector table and view, install its capture."""
    provider, model = _provider_and_model(provider, model)
    migrate.upgrade(STATE.url(), settings=STATE.settings)
    spec = targets.TargetSpec(
        name=name,
        table=table,
        columns=_split(columns) or (),
        model=model,
        dimensions=dimensions,
        provider=provider,
        template=_template(template) if template else None,
        pk=_split(pk),
        metric=metric,
        options=_options(sparse, chunk_tokens, chunk_overlap, chunk_markdown),
        embed_labels=embed_labels,
        capture=capture,
    )
    if dry_run:
        _preview(spec, as_json)
    else:
        _add(spec, as_json)


@with_connection
async def _preview(conn: AsyncConn, spec: targets.TargetSpec, as_json: bool) -> None:
    texts = await targets.preview(conn, STATE.settings, spec)
    if as_json:
        emit(True, {"target": spec.name, "valid": True, "texts": texts}, "")
        return
    console.print(f"target {spec.name} is valid; nothing was changed. Texts to embed:")
    for text in texts:
        # repr-like quoting shows the exact characters, line breaks included.
        console.print(json.dumps(text, ensure_ascii=False), highlight=False, markup=False)
    if not texts:
        console.print("(no row has text yet)")


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
                "capture": t.capture.value,
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
    for column in ("name", "table", "key", "columns", "capture", "generations"):
        table.add_column(column)
    for t in rows:
        gens = ", ".join(f"{g.id} {g.state.value} {g.model}/{g.dimensions}" for g in t.generations)
        table.add_row(
            t.name,
            f"{t.source_schema}.{t.source_table}",
            ",".join(t.pk_columns),
            ",".join(t.columns),
            t.capture.value,
            gens,
        )
    console.print(table)


@target_app.command("list")
def list_(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Registered targets and their generations."""
    _list(as_json)


@with_connection
async def _remove(conn: AsyncConn, name: str, keep_vectors: bool, as_json: bool) -> None:
    removed = await targets.remove_target(conn, name, keep_vectors=keep_vectors)
    kept = " (vector tables kept)" if keep_vectors else ""
    emit(as_json, actions.target_result(removed), f"target {name} removed{kept}")


@target_app.command("remove")
def remove(
    name: str,
    keep_vectors: Annotated[
        bool, typer.Option("--keep-vectors", help="Keep the vector tables.")
    ] = False,
    as_json: JsonFlag = False,
    yes: YesFlag = False,
) -> None:
    """Drop a target's triggers (and its vectors unless --keep-vectors). Asks first when stdin
    is a terminal (--yes: do not ask); a script without a terminal is not asked."""
    what = "its triggers" if keep_vectors else "its triggers and every vector table"
    confirm(f"remove target {name} ({what})?", yes)
    _remove(name, keep_vectors, as_json)


@with_connection
async def _pause(conn: AsyncConn, name: str, reason: str, as_json: bool) -> None:
    await drift.pause(conn, name, reason)
    emit(as_json, {"target": name, "paused_reason": reason}, f"target {name} paused: {reason}")


@target_app.command("pause")
def pause(
    name: str,
    reason: Annotated[str, typer.Option("--reason")] = "paused by an operator",
    as_json: JsonFlag = False,
) -> None:
    """Stop embedding a target; its changes keep being captured."""
    _pause(name, reason, as_json)


@with_connection
async def _resume(conn: AsyncConn, name: str, as_json: bool) -> None:
    previous = await drift.resume(conn, name)
    was = f" (was: {previous})" if previous else " (it was not paused)"
    emit(as_json, {"target": name, "was_paused": previous}, f"target {name} resumed{was}")


@target_app.command("resume")
def resume(name: str, as_json: JsonFlag = False) -> None:
    """Embed a paused target again; running daemons pick it up at once."""
    _resume(name, as_json)


@with_connection
async def _check(conn: AsyncConn, name: str, as_json: bool) -> None:
    from syncsvc.db.catalog import get_target

    target = await get_target(conn, name)
    problems = await drift.check(conn, target)
    fixing = (await partitions.drift_notes(conn)).get(name) if not problems else None
    if as_json:
        emit(
            True,
            {
                "target": name,
                "ok": not problems,
                "problems": problems,
                "paused_reason": target.paused_reason,
                "note": fixing,
            },
            "",
        )
        if problems:
            raise typer.Exit(1)
        return
    if not problems:
        paused = f"; paused: {target.paused_reason}" if target.paused_reason else ""
        note = f"; {fixing}" if fixing else ""
        console.print(f"target {name} matches its table{paused}{note}", highlight=False)
        return
    for problem in problems:
        console.print(f"[red]{problem}[/]", highlight=False)
    raise typer.Exit(1)


@target_app.command("check")
def check(name: str, as_json: JsonFlag = False) -> None:
    """Compare a target with its table's current shape (exit 1 on drift)."""
    _check(name, as_json)


@with_connection
async def _repair(
    conn: AsyncConn,
    name: str,
    columns: tuple[str, ...] | None,
    template: str | None,
    as_json: bool,
) -> None:
    target = await drift.repair(conn, name, columns=columns, template=template)
    emit(
        as_json,
        actions.target_result(target),
        f"target {name} repaired: capture rebuilt for {', '.join(target.columns)}; resumed, "
        "rows whose text changed are re-embedded",
    )


@target_app.command("repair")
def repair(
    name: str,
    columns: Annotated[
        str | None, typer.Option("--columns", help="The embedded columns' new names.")
    ] = None,
    template: Annotated[str | None, typer.Option("--template")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Rebuild a target's capture after DDL on its table, then resume it."""
    _repair(name, _split(columns), _template(template) if template else None, as_json)
