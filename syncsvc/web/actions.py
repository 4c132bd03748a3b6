"""What the admin page's buttons do, and how a refusal is answered.

Each action calls the same code as the CLI (``failures.retry_failed``, ``jobs``, ``drift``,
``promote``); what an operator asked wrongly becomes a 4xx with a reason (``refusal_of``).
"""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
from psycopg_pool import PoolTimeout

from syncsvc.capture import drift
from syncsvc.core.errors import NotFoundError, SyncsvcError
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.queue import failures
from syncsvc.web import jobs

MAX_ID = 2**31 - 1
"""Job and generation ids are PostgreSQL integers."""


def refusal_of(exc: Exception) -> tuple[int, str] | None:
    """The 4xx status and message for what an operator asked wrongly (None: our failure).

    Unknown names answer 404, values the database or syncsvc refuses 400, a clash with the
    current state 409, a database that is away 503: never 500 for the operator's input.
    """
    if isinstance(exc, KeyError):
        return 400, f"missing field {exc.args[0]!r}"
    if isinstance(exc, NotFoundError | jobs.Unavailable | psycopg.errors.NoDataFound):
        return 404, message(exc)
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return 503, f"database unavailable: {message(exc)}"
    if isinstance(exc, psycopg.IntegrityError):
        return 409, message(exc)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return 403, message(exc)
    if isinstance(exc, psycopg.DataError | psycopg.errors.RaiseException):
        return 400, message(exc)
    if isinstance(exc, SyncsvcError | ValueError):
        return 400, message(exc)
    return None


def message(exc: Exception) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return str(exc) or type(exc).__name__


def integer(value: str, name: str) -> int:
    """A form or path id: a whole number the database's integer ids can hold."""
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if not 1 <= number <= MAX_ID:
        raise ValueError(f"{name} must be between 1 and {MAX_ID}, not {number}")
    return number


async def perform(
    conn: AsyncConn, settings: Settings, what: str, form: Mapping[str, str], path: Mapping[str, str]
) -> str:
    """Carry out one admin action; returns the one-line result the page shows."""
    if what == "retry-failed":
        target = form.get("target", "").strip() or None
        count = await failures.retry_failed(conn, target)
        return f"{count} failed rows queued again" + (f" for {target}" if target else "")
    if what == "start":
        return await jobs.start(
            conn,
            settings,
            form["target"],
            model=form["model"].strip(),
            dimensions=integer(form["dimensions"], "dimensions"),
            provider=form.get("provider", "").strip() or None,
            dry_run=form.get("mode", "dry-run") != "start",
        )
    if what == "job":
        return await jobs.control(conn, integer(str(path["job"]), "job id"), path["action"])
    if what == "target":
        target, action = form["target"], path["action"]
        if action == "pause":
            await drift.pause(conn, target)
            return f"target {target} paused"
        if action == "resume":
            previous = await drift.resume(conn, target)
            return f"target {target} resumed" + (f" (was: {previous})" if previous else "")
        raise ValueError(f"unknown target action {action!r}")
    if what == "promote":
        return await jobs.promote(
            conn,
            form["target"],
            integer(form["generation"], "generation"),
            accept_failed=form.get("accept_failed") == "1",
            max_failed=settings.jobs.promote_max_failed,
        )
    raise ValueError(f"unknown action {what!r}")
