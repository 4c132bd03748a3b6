"""Registering source tables: validation up front, then catalog rows, vector table, triggers."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

from syncsvc.capture import drift, partitions, slots
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import Capture, GenerationState, Metric, Target
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, privileges, quoting, sqlfiles, statements
from syncsvc.db.catalog import get_target, load_targets
from syncsvc.embed.chunking import Chunking
from syncsvc.embed.profiles import ModelProfile, Protocol, ProviderProfile
from syncsvc.providers.registry import provider_profile
from syncsvc.store import generations

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]{0,39}$")


@dataclass(frozen=True)
class TargetSpec:
    """What ``syncsvc target add`` asks for."""

    name: str
    table: str
    columns: tuple[str, ...]
    model: str
    dimensions: int | None = None
    provider: str = "local-hash"
    template: str | None = None
    pk: tuple[str, ...] | None = None
    metric: Metric = Metric.COSINE
    options: dict[str, Any] = field(default_factory=dict)
    embed_labels: bool = False
    """Embed rows whose embedded columns are all empty as the template's labels alone."""
    capture: Capture = Capture.TRIGGERS
    """Statement triggers (no server configuration) or the WAL (``capture/slots``)."""


def split_qualified(name: str) -> tuple[str | None, str]:
    """``schema.table`` / ``"My Schema"."My Table"`` / ``table`` into (schema, table)."""
    parts: list[str] = []
    i = 0
    while i < len(name):
        if name[i] == '"':
            j = i + 1
            buf = []
            while j < len(name):
                if name[j] == '"':
                    if j + 1 < len(name) and name[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(name[j])
                j += 1
            if j >= len(name):
                raise ValidationError(f"unbalanced quotes in table name {name!r}")
            parts.append("".join(buf))
            i = j + 1
        else:
            j = name.find(".", i)
            j = len(name) if j < 0 else j
            parts.append(name[i:j])
            i = j
        if i < len(name):
            if name[i] != ".":
                raise ValidationError(f"cannot parse table name {name!r}")
            i += 1
    if len(parts) == 1:
        return None, parts[0]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise ValidationError(f"table name {name!r} must be [schema.]table")


async def _resolve_table(conn: AsyncConn, table: str) -> tuple[str, str, str]:
    schema, name = split_qualified(table)
    for candidate in dict.fromkeys([name, name.lower()]):
        cur = await conn.execute(
            sqlfiles.query("catalog", "find_table"), {"schema": schema, "table": candidate}
        )
        row = await cur.fetchone()
        if row is not None:
            if row["relkind"] not in ("r", "p"):
                raise ValidationError(
                    f"{table} is not a table: statement triggers cannot capture the writes of "
                    "views, foreign tables or materialized views"
                )
            _refuse_partial_tree(row)
            return str(row["qualified"]), row["schema"], row["name"]
    where = f"schema {schema!r}" if schema else "the current schema"
    raise ValidationError(f"table {name!r} does not exist in {where}")


def _refuse_partial_tree(row: dict[str, Any]) -> None:
    """A table whose writes its own triggers cannot all see is refused with what to do."""
    qualified = row["full_name"]
    if row["relispartition"]:
        raise ValidationError(
            f"{qualified} is a partition of {row['parent']}: writes through the parent would "
            f"be missed; register {row['parent']} instead"
        )
    if row["parent"] is not None:
        raise ValidationError(
            f"{qualified} inherits from {row['parent']}: writes through the parent would be "
            f"missed; register {row['parent']} instead"
        )
    if row["inheritor"] is not None:
        raise ValidationError(
            f"{qualified} has inheritance child {row['inheritor']}: its rows would be read but "
            "writes to it not captured; use declarative partitioning or register each table"
        )
    if row["foreign_partition"] is not None:
        raise ValidationError(
            f"partition {row['foreign_partition']} of {qualified} is a foreign table: "
            "statement triggers cannot capture writes naming it"
        )


async def validate(conn: AsyncConn, settings: Settings, spec: TargetSpec) -> dict[str, Any]:
    """Check everything a target needs before changing anything; return the catalog row."""
    if not NAME_PATTERN.match(spec.name):
        raise ValidationError(
            f"target name {spec.name!r} must be lower-case letters, digits and _ (max 40)"
        )
    if any(t.name == spec.name for t in await load_targets(conn)):
        raise ValidationError(
            f"a target named {spec.name!r} already exists; its model or dimensions are never "
            "changed in place (that would mix vector spaces): build a new generation with "
            f"'syncsvc reembed {spec.name} --model {spec.model} --dimensions N', then promote it"
        )
    if not spec.columns:
        raise ValidationError("give at least one column to embed (--columns title,body)")
    oid, schema, table = await _resolve_table(conn, spec.table)
    cur = await conn.execute(sqlfiles.query("catalog", "table_columns"), {"oid": oid})
    table_columns = {r["name"]: r for r in await cur.fetchall()}
    for column in spec.columns:
        if column not in table_columns:
            raise ValidationError(
                f"column {column!r} does not exist in {oid} (columns: {', '.join(table_columns)})"
            )
        if not table_columns[column]["textlike"]:
            raise ValidationError(
                f"column {column!r} is {table_columns[column]['type']}, not text-like "
                "(text, varchar, char, citext)"
            )
        if table_columns[column]["virtual"]:
            raise ValidationError(drift.virtual_problem(column, f"{schema}.{table}"))
    template = spec.template or statements.default_template(list(spec.columns))
    try:
        fields = statements.template_fields(template)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None
    for name in fields:
        if name not in spec.columns:
            raise ValidationError(
                f"template field {{{name}}} is not one of the embedded columns "
                f"({', '.join(spec.columns)})"
            )
    pk = await _resolve_key(conn, oid, spec.pk, table_columns)
    if spec.capture is Capture.WAL:
        await slots.check(conn)
        await slots.check_identity(conn, oid, pk)
        if await slots.identity_lost(conn, [(schema, table)]):
            raise ValidationError(
                f"capture = wal needs a replica identity on every partition of {oid}: give "
                "each its primary key (PostgreSQL refuses UPDATE and DELETE on a published "
                "partition without one)"
            )
        generated = [c for c in spec.columns if table_columns[c]["generated"]]
        if generated:
            raise ValidationError(
                f"capture = wal cannot read generated column {generated[0]!r} (the WAL "
                "carries no generated columns): embed the columns it is computed from, or "
                "use capture = triggers"
            )
    clash = generations.RESERVED_COLUMNS.intersection(pk)
    if clash:
        raise ValidationError(f"key column names {sorted(clash)} are reserved by syncsvc")
    profile = provider_profile(spec.provider, settings)
    model = profile.model(spec.model)
    dimensions = spec.dimensions or model.default_dimensions
    if dimensions not in model.dimensions:
        allowed = "/".join(str(d) for d in model.dimensions)
        raise ValidationError(f"{spec.model} does not offer {dimensions} dimensions ({allowed})")
    if spec.options.get("sparse"):
        check_sparse(profile, model)
    try:
        chunked = Chunking.from_options(spec.options)
    except (KeyError, TypeError, ValueError):
        raise ValidationError(
            'chunking must look like {"tokens": 256, "overlap": 32, "mode": "text"}'
        ) from None
    if chunked is not None:
        chunked.validate(model.max_tokens_per_input)
    configured = settings.providers.get(spec.provider)
    declared = configured.space if configured else None
    space = declared or model.space or f"{profile.name}/{model.model}"
    return {
        "name": spec.name,
        "schema": schema,
        "table": table,
        "pk_columns": list(pk),
        "pk_types": [table_columns[c]["type"] for c in pk],
        "columns": list(spec.columns),
        "template": template,
        "metric": spec.metric.value,
        "embed_labels": spec.embed_labels,
        "dimensions": dimensions,
        "space": space,
        "capture": spec.capture.value,
    }


def check_sparse(profile: ProviderProfile, model: ModelProfile) -> None:
    """Refuse sparse vectors unless the provider's wire can return them (DashScope native)."""
    if profile.protocol is not Protocol.DASHSCOPE_NATIVE or not model.supports_sparse:
        raise ValidationError(
            f"provider profile {profile.name!r} cannot return sparse vectors for "
            f"{model.model!r}: only DashScope's native API does (profiles dashscope-*-native "
            "with text-embedding-v3/v4)"
        )


async def _resolve_key(
    conn: AsyncConn,
    oid: str,
    requested: tuple[str, ...] | None,
    table_columns: dict[str, Any],
) -> tuple[str, ...]:
    cur = await conn.execute(sqlfiles.query("catalog", "primary_key"), {"oid": oid})
    row = await cur.fetchone()
    primary = tuple(row["columns"]) if row else None
    if requested is None or requested == primary:
        if primary is None:
            raise ValidationError(
                f"{oid} has no primary key; add one or name a unique NOT NULL key with --pk"
            )
        return primary
    for column in requested:
        if column not in table_columns:
            raise ValidationError(f"key column {column!r} does not exist in {oid}")
    cur = await conn.execute(sqlfiles.query("catalog", "unique_keys"), {"oid": oid})
    if any(set(r["columns"]) == set(requested) for r in await cur.fetchall()):
        return requested
    raise ValidationError(
        f"--pk {','.join(requested)} is not the primary key or a unique index of NOT NULL "
        f"columns of {oid}"
    )


def _target(target_id: int, spec: TargetSpec, row: dict[str, Any]) -> Target:
    """The target a validated catalog row describes."""
    return Target(
        id=target_id,
        name=spec.name,
        source_schema=row["schema"],
        source_table=row["table"],
        pk_columns=tuple(row["pk_columns"]),
        pk_types=tuple(row["pk_types"]),
        columns=tuple(row["columns"]),
        template=row["template"],
        metric=spec.metric,
        embed_labels=spec.embed_labels,
        capture=spec.capture,
    )


async def preview(
    conn: AsyncConn, settings: Settings, spec: TargetSpec, rows: int = 3
) -> list[str]:
    """Validate ``spec`` and render the exact embedding input of a few rows; changes nothing."""
    target = _target(0, spec, await validate(conn, settings, spec))
    cur = await conn.execute(
        sql.SQL("SELECT {} AS input FROM {} s WHERE {} ORDER BY {} LIMIT {}").format(
            statements.input_expr(target, "s"),
            statements.source(target),
            statements.has_text(target, "s"),
            statements.pk_columns(target, "s"),
            quoting.literal(rows),
        )
    )
    return [r["input"] for r in await cur.fetchall()]


async def add_target(conn: AsyncConn, settings: Settings, spec: TargetSpec) -> Target:
    """Validate, then create the target, its first (active) generation, view and capture:
    triggers, or (``capture = wal``) the table in syncsvc's publication."""
    row = await validate(conn, settings, spec)
    if spec.capture is Capture.WAL and slots.outside_transaction(conn):
        # Before the target exists: every change committed after it is in the slot, and the
        # first sweep (below) finds the rest. Inside a transaction (a request filed from SQL)
        # PostgreSQL cannot create a slot: the WAL reader creates it, then sweeps.
        await slots.create_slot(conn)
    async with conn.transaction():
        cur = await conn.execute(sqlfiles.query("catalog", "insert_target"), row)
        created = await cur.fetchone()
        assert created is not None
        target = _target(created["id"], spec, row)
        if target.capture is not Capture.TRIGGERS:
            await conn.execute(
                sqlfiles.query("catalog", "set_capture"),
                {"id": target.id, "capture": target.capture.value},
            )
        generation = await generations.create_generation(
            conn,
            target,
            provider=spec.provider,
            space=row["space"],
            model=spec.model,
            dimensions=row["dimensions"],
            options=spec.options,
            state=GenerationState.ACTIVE,
        )
        await generations.replace_view(conn, target, generation)
        if target.capture is Capture.WAL:
            await slots.publish(conn, target)
            await partitions.capture_partitions(conn, target)  # records the tree only
        else:
            await conn.execute(statements.capture_function(target))
            await conn.execute(statements.lock_capture_function(target))
            for statement in statements.create_triggers(target):
                await conn.execute(statement)
            await partitions.capture_partitions(conn, target)
        # Delivered at commit: running daemons sweep the new target now, not at the next sweep.
        await common.notify(conn, statements.TARGETS_CHANNEL, str(target.id))
    logger.info(
        "target %s added on %s.%s (capture: %s)",
        spec.name,
        row["schema"],
        row["table"],
        spec.capture.value,
    )
    return await get_target(conn, spec.name)


async def refresh_capture(conn: AsyncConn) -> int:
    """Rebuild every target's capture function from this version's template.

    The functions are generated code: an upgrade that changes the template reaches existing
    targets here (``migrate.upgrade``, which ``syncsvc run`` calls). CREATE OR REPLACE keeps
    the triggers and the function's ACL, and takes no lock on the application's table.
    """
    tracked = [t for t in await load_targets(conn) if t.capture is Capture.TRIGGERS]
    async with conn.transaction():
        for target in tracked:
            await conn.execute(statements.capture_function(target))
            await conn.execute(statements.lock_capture_function(target))
    return len(tracked)


async def remove_target(conn: AsyncConn, name: str, *, keep_vectors: bool = False) -> Target:
    """Drop a target's capture and catalog rows; its vector tables too unless kept. The last
    WAL target takes syncsvc's publication and replication slot with it."""
    target = await get_target(conn, name)
    last_wal = False
    async with conn.transaction():
        if target.capture is Capture.WAL:
            last_wal = await slots.unpublish(conn, target)
        else:
            await partitions.release_partitions(conn, target)
            for statement in statements.drop_triggers(target):
                await conn.execute(statement)
        if keep_vectors:
            await privileges.revoke_kept(conn, target)
        else:
            await conn.execute(
                sql.SQL("DROP VIEW IF EXISTS syncsvc.{}").format(quoting.ident(target.view_name))
            )
            for generation in target.generations:
                await generations.drop_generation_table(conn, generation)
        await conn.execute(sqlfiles.query("catalog", "delete_target"), {"id": target.id})
        await common.notify(conn, statements.TARGETS_CHANNEL, str(target.id))
    if last_wal:
        # Not transactional (allowed inside a request's transaction too): after the commit
        # when there is one, so a failed removal keeps its slot.
        await slots.drop_slot(conn)
    return target
