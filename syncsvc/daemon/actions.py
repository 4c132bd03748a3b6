"""Administrative actions asked for from SQL, carried out by a daemon with the CLI's code.

``syncsvc.add_target``, ``syncsvc.remove_target`` and ``syncsvc.promote`` record a request in
``syncsvc.requests`` and notify ``syncsvc_requests``: the DDL and the validation they need live
here in Python, once. A running daemon (the owner role) claims each request and runs the very
function the CLI and ``syncsvc.Client`` call, in one transaction with the request's outcome:
a request is ``done`` exactly when its action committed, ``failed`` with the reason otherwise.
The table is the truth and the channel only wakes: the daemon also polls for requests.

The ``*_result`` functions are the JSON shape of each outcome, shared by the request's
``result`` column and the CLI's ``--json`` output.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from syncsvc.capture import targets
from syncsvc.core.errors import SyncsvcError
from syncsvc.core.models import Capture, Metric, Target
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import common, sqlfiles
from syncsvc.store import promote

logger = logging.getLogger(__name__)

REQUESTS_CHANNEL = "syncsvc_requests"
LOCK_TIMEOUT_MS = 5000
"""How long a requested action's DDL may wait for a lock on the application's tables."""


def target_result(target: Target) -> dict[str, Any]:
    """A target as the outcome of adding or removing it."""
    active = target.active
    return {
        "target": target.name,
        "target_id": target.id,
        "table": f"{target.source_schema}.{target.source_table}",
        "key": list(target.pk_columns),
        "columns": list(target.columns),
        "template": target.template,
        "embed_labels": target.embed_labels,
        "capture": target.capture.value,
        "generation": active.id if active else None,
        "provider": active.provider if active else None,
        "model": active.model if active else None,
        "dimensions": active.dimensions if active else None,
        "options": active.options if active else {},
        "view": f"syncsvc.{target.view_name}",
    }


def promotion_result(promotion: promote.Promotion) -> dict[str, Any]:
    coverage = promotion.coverage
    return {
        "target": promotion.target,
        "generation": promotion.generation.id,
        "previous": promotion.previous.id if promotion.previous else None,
        "model": promotion.generation.model,
        "dimensions": promotion.generation.dimensions,
        "rows": coverage.rows,
        "current": coverage.current,
        "missing": coverage.missing,
        "failed": coverage.failed,
        "failed_keys": list(coverage.failed_keys),
        "dry_run": promotion.dry_run,
    }


def spec_of(name: str, args: dict[str, Any]) -> targets.TargetSpec:
    """The ``TargetSpec`` of an ``add_target`` request's arguments."""
    return targets.TargetSpec(
        name=name,
        table=str(args["table"]),
        columns=tuple(args.get("columns") or ()),
        model=str(args["model"]),
        dimensions=args.get("dimensions"),
        provider=str(args["provider"]),
        template=args.get("template"),
        pk=tuple(args["pk"]) if args.get("pk") else None,
        metric=Metric(args.get("metric") or Metric.COSINE.value),
        embed_labels=bool(args.get("embed_labels")),
        options={"chunking": dict(args["chunking"])} if args.get("chunking") else {},
        capture=Capture(args.get("capture") or Capture.TRIGGERS.value),
    )


async def perform(
    conn: AsyncConn, settings: Settings, action: str, target: str, args: dict[str, Any]
) -> dict[str, Any]:
    """Run one requested action; returns its result."""
    if action == "add_target":
        return target_result(await targets.add_target(conn, settings, spec_of(target, args)))
    if action == "remove_target":
        removed = await targets.remove_target(
            conn, target, keep_vectors=bool(args.get("keep_vectors"))
        )
        return target_result(removed)
    if action == "promote":
        done = await promote.promote(
            conn,
            target,
            int(args["generation"]),
            force=bool(args.get("force")),
            accept_failed=bool(args.get("accept_failed")),
            max_failed=settings.jobs.promote_max_failed,
        )
        return promotion_result(done)
    raise SyncsvcError(f"unknown action {action!r}")


def _reason(exc: Exception) -> str:
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return (
            f"a table was busy: could not lock it within {LOCK_TIMEOUT_MS / 1000:g} s (long "
            "transactions on it?); file the request again"
        )
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return str(exc)


async def carry_out(conn: AsyncConn, settings: Settings, limit: int = 20) -> int:
    """Carry out up to ``limit`` pending requests, oldest first; returns how many."""
    handled = 0
    while handled < limit:
        async with conn.transaction():
            cur = await conn.execute(sqlfiles.query("catalog", "claim_request"))
            row = await cur.fetchone()
            if row is None:
                break
            # DDL waiting for a lock on a busy table would queue the application's writes
            # behind it: give up quickly and say why instead.
            await common.set_lock_timeout(conn, f"{LOCK_TIMEOUT_MS}ms")
            try:
                # A savepoint: a failed action leaves nothing behind but its reason.
                async with conn.transaction():
                    result = await perform(
                        conn, settings, row["action"], row["target"], dict(row["args"])
                    )
            except (SyncsvcError, psycopg.Error, ValueError, KeyError) as exc:
                if conn.broken:
                    raise  # the database went away: the request stays pending for a retry
                reason = _reason(exc)
                logger.warning(
                    "request %d (%s %s) failed: %s", row["id"], row["action"], row["target"], reason
                )
                await conn.execute(
                    sqlfiles.query("catalog", "request_failed"), {"id": row["id"], "error": reason}
                )
            else:
                logger.info("request %d: %s %s done", row["id"], row["action"], row["target"])
                await conn.execute(
                    sqlfiles.query("catalog", "request_done"),
                    {"id": row["id"], "result": Jsonb(result)},
                )
        handled += 1
    return handled
