"""Serving the web app with uvicorn: inside the daemon (a service) or on its own.

uvicorn would install its own SIGINT/SIGTERM handlers and swallow the daemon's; the server
here leaves signals to its owner and stops when told to.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette

from syncsvc.observe import metrics
from syncsvc.web.auth import AdminAccess

if TYPE_CHECKING:
    from syncsvc.core.host import Host
    from syncsvc.web.app import StatsSource

logger = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:9100`` for IPv6; a bare port means 127.0.0.1)."""
    host, sep, port = address.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", address
    host = host.strip("[]") or "127.0.0.1"
    try:
        return host, int(port)
    except ValueError:
        raise ValueError(f"bad address {address!r}: expected host:port") from None


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # signals belong to the daemon


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


async def serve(app: Starlette, sock: socket.socket, stop: asyncio.Event) -> None:
    """Serve ``app`` on a bound socket until ``stop`` is set."""
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="syncsvc-web-uvicorn")
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        waiter.cancel()
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT)
        sock.close()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]


class WebService:
    """The daemon service serving ``/metrics``, probes and (if enabled) the admin page."""

    def __init__(
        self, address: str, *, refresh_seconds: float = 2.0, stats: StatsSource | None = None
    ) -> None:
        self.host, self.port = parse_address(address)
        self.refresh_seconds = refresh_seconds
        self.stats = stats
        self.bound = asyncio.Event()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def __call__(self, host: Host) -> None:
        from syncsvc.web.app import create_app

        access = AdminAccess.from_settings(host.settings, self.host)
        if host.settings.admin_enabled and not access.enabled:
            logger.error("%s", access.reason)
        app = create_app(
            host.pool,
            host.settings,
            access,
            host=host,
            refresh_seconds=self.refresh_seconds,
            stats=self.stats,
        )
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]
        metrics.DAEMON_START.set(time.time())
        logger.info(
            "serving /metrics, /healthz, /readyz%s on %s",
            ", /admin" if access.enabled else "",
            self.url,
        )
        self.bound.set()
        await serve(app, sock, host.stop_event)
        if not host.stop_event.is_set():
            raise RuntimeError("the web server stopped on its own")
