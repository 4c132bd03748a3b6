"""What every CLI command shares: settings, the resolved database URL, error reporting."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine
from functools import wraps
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from syncsvc.cli.failure import describe
from syncsvc.database import AsyncConn, aconnect, resolve_url
from syncsvc.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


class State:
    """The settings and database of this invocation, built on first use: a broken
    syncsvc.toml must fail inside a command (one readable line), not at import."""

    def __init__(self) -> None:
        self._settings: Settings | None = None
        self._url: str | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings()
        return self._settings

    def reset(self, settings: Settings) -> None:
        """Start an invocation with these settings (and resolve its database anew)."""
        self._settings = settings
        self._url = None

    def url(self) -> str:
        if self._url is None:
            self._url = resolve_url(self.settings)
        return self._url


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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
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
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(1)


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
