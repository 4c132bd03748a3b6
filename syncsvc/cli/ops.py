"""Operations commands: ``syncsvc serve-admin`` (the admin page without a daemon)."""

from __future__ import annotations

import asyncio
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from syncsvc.cli.context import STATE, console, fail, run
from syncsvc.core.lazy import lazy_module
from syncsvc.db.database import aconnect, create_pool, ensure_schema

if TYPE_CHECKING:
    from syncsvc.web import app as web_app
    from syncsvc.web import auth as web_auth
    from syncsvc.web import server as web_server
else:  # Starlette and uvicorn load only when the page is served
    web_app = lazy_module("syncsvc.web.app")
    web_auth = lazy_module("syncsvc.web.auth")
    web_server = lazy_module("syncsvc.web.server")


def register(app: typer.Typer) -> None:
    app.command("serve-admin")(serve_admin_command)


def serve_admin_command(
    address: Annotated[
        str,
        typer.Option(
            "--address",
            help="host:port; anything but loopback needs the admin token variable set.",
        ),
    ] = "127.0.0.1:8080",
) -> None:
    """Serve the admin page, /metrics and probes for this database without running a daemon."""
    settings = STATE.settings.model_copy(update={"admin_enabled": True})
    try:
        host, port = web_server.parse_address(address)
    except ValueError as exc:
        raise fail(str(exc)) from None
    access = web_auth.AdminAccess.from_settings(settings, host)
    if not access.enabled:
        raise fail(access.reason)
    url = STATE.url()

    async def main() -> None:
        conn = await aconnect(url)  # a clear error now beats a failing page later
        try:
            await ensure_schema(conn)
        finally:
            await conn.close()
        pool = create_pool(url, min_size=1, max_size=4)
        await pool.open(wait=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            sock = web_server.bind(host, port)
            shown = f"[{host}]" if ":" in host else host
            console.print(f"admin page on http://{shown}:{sock.getsockname()[1]}/admin")
            await web_server.serve(web_app.create_app(pool, settings, access), sock, stop)
        finally:
            await pool.close()

    run(main())
