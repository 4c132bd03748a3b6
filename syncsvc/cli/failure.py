"""What the CLI says when a command fails: one or two lines, what is wrong and what to do.

Every command's exceptions end here (``describe``); tracebacks only with ``--log-level debug``.
"""

from __future__ import annotations

import difflib
import os
import tomllib
import typing
from typing import Any

import psycopg
import pydantic

from syncsvc.core.errors import SyncsvcError
from syncsvc.core.settings import CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE, Settings

NOT_MIGRATED = (
    "the syncsvc schema is missing or out of date in this database ({detail}); "
    "run 'syncsvc migrate' as the role that owns syncsvc"
)
NO_PRIVILEGE = (
    "{detail}. syncsvc runs as the role that owns schema syncsvc and the source tables' triggers "
    "(see README 'Requirements'); searchers need 'syncsvc grant search ROLE'"
)


def _database_error(exc: psycopg.Error) -> str:
    detail = (exc.diag.message_primary or str(exc)).strip()
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return NO_PRIVILEGE.format(detail=detail)
    if isinstance(
        exc,
        psycopg.errors.UndefinedTable
        | psycopg.errors.InvalidSchemaName
        | psycopg.errors.UndefinedFunction
        | psycopg.errors.UndefinedColumn,
    ) and "syncsvc" in str(exc):
        return NOT_MIGRATED.format(detail=detail)
    if isinstance(exc, psycopg.OperationalError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no reply"
        return f"cannot connect to PostgreSQL: {first}"
    return f"database error: {detail}"


def _settings_error(exc: pydantic.ValidationError) -> str:
    problems = []
    for error in exc.errors()[:3]:
        where = ".".join(str(part) for part in error["loc"]) or "settings"
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown setting{_did_you_mean(error['loc'])}")
            continue
        problems.append(f"{where}: {error['msg']}")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return (
        f"invalid settings ({_config_file()} or SYNCSVC_* variables): {'; '.join(problems)}{more}"
    )


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """A close known name for an unknown key at ``loc`` (e.g. providers.ds.concurency)."""
    model: Any = Settings
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        if field is None:
            continue  # a free-form name, e.g. the provider's own: [providers.<name>]
        args = typing.get_args(field.annotation)
        model = args[-1] if args else field.annotation
    known = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _config_file() -> str:
    return os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)


def _provider_error(exc: BaseException) -> str | None:
    """A provider's refusal (a missing key, a wrong key, no access): its own words, which name
    what to set; never the provider object."""
    # Local: the embedding stage loads only when a command embeds (the CLI starts light).
    from syncsvc.embed.items import ProviderPaused
    from syncsvc.embed.provider import ProviderError

    if isinstance(exc, ProviderPaused):
        exc = exc.error
    if isinstance(exc, ProviderError):
        return f"the embeddings provider refused the request: {exc}"
    return None


def describe(exc: BaseException) -> str | None:
    """The user-facing message for ``exc``; None for a bug (which keeps its traceback)."""
    original: Any = getattr(exc, "orig", None)  # SQLAlchemy (Alembic) wraps the driver's error
    if isinstance(original, psycopg.Error):
        exc = original
    if isinstance(exc, SyncsvcError):
        return str(exc)
    provider_error = _provider_error(exc)
    if provider_error is not None:
        return provider_error
    if isinstance(exc, psycopg.Error):
        return _database_error(exc)
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"{_config_file()} is not valid TOML: {exc}"
    if isinstance(exc, pydantic.ValidationError):
        return _settings_error(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    return None
