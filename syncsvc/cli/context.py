"""What every CLI command shares: settings, the resolved database URL, error reporting."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from syncsvc.database import AsyncConn, aconnect, resolve_url
from syncsvc.errors import SyncsvcError
from syncsvc.settings import Settings

P = ParamSpec("P")
T = TypeVar("T")

console = Console()
err_console = Console(stderr=True)


@dataclass
class State:
    settings: Settings = field(default_factory=Settings)
    _url: str | None = None

    def url(self) -> str:
        if self._url is None:
            self._url = resolve_url(self.settings)
        return self._url


STATE = State()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine, turning syncsvc errors into a clear message and exit code 1."""
    try:
        return asyncio.run(coro)
    except SyncsvcError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None


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
