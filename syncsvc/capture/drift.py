"""Schema drift of tracked tables: detect it, pause the target with the cause, repair it.

Capture triggers never raise (they log to ``syncsvc.capture_errors``), so DDL on a tracked
table cannot break the application. What they could not capture is found again by the sweep
once ``repair`` has rebuilt the capture for the table's new shape.
"""

from __future__ import annotations

import dataclasses
import logging

import psycopg
from psycopg import sql

from syncsvc.capture import partitions
from syncsvc.core.errors import NotFoundError, TargetDefinitionError, ValidationError
from syncsvc.core.models import Capture, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, quoting, sqlfiles, statements
from syncsvc.db.catalog import get_target

logger = logging.getLogger(__name__)

# SQLSTATE classes that mean "this target's table or data no longer fits": 42 (undefined
# column/table, privileges, type mismatch) and 22 (a key that no longer casts).
TARGET_FAULT_CLASSES = ("42", "22")


def is_target_fault(exc: BaseException) -> bool:
    """An error of one target's table, data or definition, not of the database connection.

    A statement psycopg refuses to build (``ProgrammingError`` without a SQLSTATE) was built
    from the target's definition: pausing that target beats stopping every target.
    """
    if isinstance(exc, TargetDefinitionError):
        return True
    if not isinstance(exc, psycopg.Error) or isinstance(exc, psycopg.OperationalError):
        return False
    if exc.sqlstate is None:
        return isinstance(exc, psycopg.ProgrammingError)
    return exc.sqlstate[:2] in TARGET_FAULT_CLASSES


def virtual_problem(column: str, where: str) -> str:
    return (
        f"column {column} of {where} is a VIRTUAL generated column: a statement trigger sees it "
        "as NULL, so its changes cannot be captured; make it STORED or embed its base columns"
    )


def fault_reason(target: Target, exc: psycopg.Error) -> str:
    message = (exc.diag.message_primary or str(exc)).strip()
    return (
        f"cannot read {target.source_schema}.{target.source_table}: {message} "
        f"(fix the table, or 'syncsvc target repair {target.name}')"
    )


async def diagnose(conn: AsyncConn, target: Target, exc: Exception) -> str:
    """The pause reason for a target fault: the drift itself when the catalog shows it."""
    if not isinstance(exc, psycopg.Error):
        return str(exc)
    problems = await check(conn, target)
    if not problems:
        return fault_reason(target, exc)
    return f"{'; '.join(problems)} (then 'syncsvc target repair {target.name}')"


async def check(conn: AsyncConn, target: Target) -> list[str]:
    """What no longer matches between the target's catalog entry and its table (empty: ok)."""
    oid = await common.relation_oid(conn, target.source_schema, target.source_table)
    where = f"{target.source_schema}.{target.source_table}"
    if oid is None:
        return [f"table {where} no longer exists (renamed or dropped)"]
    cur = await conn.execute(sqlfiles.query("catalog", "table_columns"), {"oid": oid})
    columns = {r["name"]: r for r in await cur.fetchall()}
    problems = []
    for column in target.columns:
        if column not in columns:
            problems.append(f"column {column} no longer exists in {where}")
        elif not columns[column]["textlike"]:
            problems.append(f"column {column} of {where} is now {columns[column]['type']}")
        elif columns[column]["virtual"]:
            problems.append(virtual_problem(column, where))
    for column, pk_type in zip(target.pk_columns, target.pk_types, strict=True):
        if column not in columns:
            problems.append(f"key column {column} no longer exists in {where}")
        elif columns[column]["type"] != pk_type:
            problems.append(
                f"key column {column} of {where} is now {columns[column]['type']}, was {pk_type}"
            )
    return problems


async def pause(conn: AsyncConn, name: str, reason: str = "paused by an operator") -> None:
    """Stop embedding a target (its changes keep being captured)."""
    try:
        await conn.execute(
            sqlfiles.query("catalog", "pause_by_name"), {"name": name, "reason": reason}
        )
    except psycopg.errors.NoDataFound:
        raise NotFoundError(f"no target named {name!r} (see 'syncsvc target list')") from None


async def resume(conn: AsyncConn, name: str) -> str | None:
    """Embed a paused target again; returns the reason it was paused for."""
    try:
        cur = await conn.execute(sqlfiles.query("catalog", "resume_by_name"), {"name": name})
    except psycopg.errors.NoDataFound:
        raise NotFoundError(f"no target named {name!r} (see 'syncsvc target list')") from None
    row = await cur.fetchone()
    return None if row is None else row["previous"]


async def pause_for_capture_errors(conn: AsyncConn) -> list[tuple[str, str]]:
    """Pause every running target whose capture trigger logged an error; (name, reason)."""
    cur = await conn.execute(sqlfiles.query("catalog", "capture_errors"))
    paused = []
    for row in await cur.fetchall():
        reason = (
            f"capture of {row['operation']} failed: {row['error']} (the table changed shape; "
            f"'syncsvc target check {row['name']}', then 'syncsvc target repair {row['name']}')"
        )
        await conn.execute(
            sqlfiles.query("catalog", "pause_target"), {"id": row["target_id"], "reason": reason}
        )
        logger.error("pausing target %s: %s", row["name"], reason)
        paused.append((row["name"], reason))
    return paused


async def repair(
    conn: AsyncConn,
    name: str,
    *,
    columns: tuple[str, ...] | None = None,
    template: str | None = None,
) -> Target:
    """Rebuild a target's capture for its table's current shape, then resume it.

    Give ``columns`` (and ``template``) after a rename. The key must be unchanged: vector
    tables are keyed by it. The sweep that follows re-embeds only rows whose text changed.
    """
    target = await get_target(conn, name)
    updated = dataclasses.replace(
        target,
        columns=columns or target.columns,
        template=template
        or (statements.default_template(list(columns)) if columns else target.template),
    )
    fields = statements.template_fields(updated.template)
    unknown = [f for f in fields if f not in updated.columns]
    if unknown:
        raise ValidationError(
            f"template fields {unknown} are not embedded columns ({', '.join(updated.columns)})"
        )
    problems = await check(conn, updated)
    if problems:
        key_gone = any(p.startswith("key column") for p in problems)
        advice = (
            "the key changed: remove the target and add it again"
            if key_gone
            else "give the new names with --columns (and --template)"
        )
        raise ValidationError(f"cannot repair {name}: {'; '.join(problems)}; {advice}")
    async with conn.transaction():
        if target.capture is Capture.TRIGGERS:
            await partitions.release_partitions(conn, target)
            for statement in statements.drop_triggers(target):
                await conn.execute(statement)
        await conn.execute(
            sql.SQL("UPDATE syncsvc.targets SET columns = {}, template = {} WHERE id = {}").format(
                quoting.literal(list(updated.columns)),
                quoting.literal(updated.template),
                quoting.literal(target.id),
            )
        )
        if target.capture is Capture.TRIGGERS:
            await conn.execute(statements.capture_function(updated))
            await conn.execute(statements.lock_capture_function(updated))
            for statement in statements.create_triggers(updated):
                await conn.execute(statement)
            await partitions.capture_partitions(conn, updated)
        await conn.execute(sqlfiles.query("catalog", "resume_by_name"), {"name": name})
    logger.info("target %s repaired: capture rebuilt for %s", name, ", ".join(updated.columns))
    return await get_target(conn, name)
