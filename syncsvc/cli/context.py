"""What every CLI command shares: settings, the resolved database URL, error reporting."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from syncsvc.cli.failure import describe
from syncsvc.core import logs
from syncsvc.core.settings import Settings, config_file, masked_url
from syncsvc.core.types import AsyncConn
from syncsvc.db.database import aconnect, resolve_url

P = ParamSpec("P")
T = TypeVar("T")


def _console(stderr: bool = False) -> Console:
    """A terminal gets rich's layout; a pipe or file gets every cell whole: no wrapping at 80
    columns, no ellipsis, no colour codes (scripts read what they are given)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True, no_color=True, highlight=False)


console = _console()
err_console = _console(stderr=True)


class State:
    """The settings and database of this invocation, built on first use: a broken
    syncsvc.toml must fail inside a command (one readable line), not at import."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._url: str | None = None
        self.embedded = False
        """Whether this invocation uses the embedded server (no database configured)."""
        self.overridden: set[str] = set()
        """Settings given as command-line options (``config show`` names their source)."""

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    def reset(self, settings: Settings, overridden: set[str] | None = None) -> None:
        """Start an invocation with these settings (and resolve its database anew)."""
        self._settings = settings
        self._url = None
        self.overridden = overridden or set()

    def url(self) -> str:
        """The database of this invocation; says once (on stderr) which one, and which
        config file: a command run from another directory must not surprise anyone."""
        if self._url is None:
            settings = self.settings
            self.embedded = not settings.database_configured()
            self._url = resolve_url(settings, announce=False)
            if json_logging():
                # Under --log-format json every stderr line is a JSON object.
                logging.getLogger("syncsvc.cli").info(setup_line(settings))
            elif logging.getLogger("syncsvc").isEnabledFor(logging.INFO):
                err_console.print(f"[dim]{setup_line(settings)}[/]", highlight=False)
        return self._url


def setup_line(settings: Settings) -> str:
    """``using database …; config …`` (the password masked)."""
    if settings.database_url:
        where = f"database {masked_url(settings.database_url)}"
    elif settings.libpq_configured():
        where = "the database of the PG* variables"
    else:
        where = f"the embedded PostgreSQL in {settings.state_dir / 'pgdata'}"
    path = config_file()
    config = f"config {path}" if path.is_file() else f"no config file ({path} not found)"
    return f"using {where}; {config}"


STATE = State()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning known failures into a clear message and exit code 1."""
    try:
        return asyncio.run(coro)
    except Exception as exc:
        raise report(exc) from None


def debugging() -> bool:
    return STATE.settings.log_level.lower() == "debug"


def report(exc: Exception) -> Exception:
    """Print what went wrong in a line or two and return the Exit to raise (or ``exc`` itself:
    a bug, or ``--log-level debug``, keeps its traceback)."""
    message = describe(exc)
    if message is None or debugging():
        return exc
    print_error(message)
    return typer.Exit(1)


def with_connection(
    func: Callable[..., Awaitable[T]],
) -> Callable[..., T]:
    """Decorator: call ``func(conn, *args)`` with a checked connection, synchronously."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        async def main() -> T:
            conn = await aconnect(STATE.url())
            try:
                return await func(conn, *args, **kwargs)
            finally:
                await conn.close()

        return run(main())

    return wrapper


def fail(message: str) -> typer.Exit:
    print_error(message)
    return typer.Exit(1)


def print_error(message: str) -> None:
    """``error: …`` on stderr: one JSON object under ``--log-format json``, else one line."""
    if json_logging():
        logging.getLogger("syncsvc.cli").error(message)
        return
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, markup=True)


def json_logging() -> bool:
    """Whether stderr carries JSON lines (``--log-format json``): read from the configured
    handler, since settings themselves may be what failed."""
    return any(isinstance(h.formatter, logs.JsonFormatter) for h in logging.getLogger().handlers)


YesFlag = Annotated[
    bool,
    typer.Option(
        "--yes", "-y", help="Do not ask for confirmation (a terminal asks; a script not)."
    ),
]


def confirm(question: str, yes: bool) -> None:
    """Ask ``question`` when stdin is a terminal and ``--yes`` was not given; a script (no
    terminal on stdin) proceeds as it always did. Exits 1 on anything but yes."""
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False, err=True):
        err_console.print("aborted; nothing was changed", highlight=False)
        raise typer.Exit(1)


def is_tty() -> bool:
    return sys.stdout.isatty()


async def connect() -> AsyncConn:
    return await aconnect(STATE.url())


JsonFlag = Annotated[bool, typer.Option("--json", help="Machine-readable output (JSON).")]


def emit(as_json: bool, data: Any, message: str) -> None:
    """Print ``message`` for people, or ``data`` as one JSON document for scripts."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
    else:
        console.print(message, highlight=False)
