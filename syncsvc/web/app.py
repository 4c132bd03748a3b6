"""The daemon's HTTP surface: ``/metrics``, ``/healthz``, ``/readyz`` and the admin page.

Probes and metrics are unauthenticated (orchestrators and Prometheus need them and they reveal
no row content). The admin page and its actions follow ``AdminAccess``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.observe import metrics
from syncsvc.observe.history import Sample
from syncsvc.web import actions, admin, jobs
from syncsvc.web.auth import COOKIE, AdminAccess, same_origin
from syncsvc.web.health import readiness
from syncsvc.web.templating import templates

if TYPE_CHECKING:
    from syncsvc.core.host import Host

logger = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConn]


class StatsSource(Protocol):
    """The daemon's samples of the last hour (``syncsvc.observe.history.StatsHistory``)."""

    @property
    def interval(self) -> float: ...

    @property
    def window(self) -> float: ...

    def get_stats(self) -> Sequence[Sample]: ...


class WebState:
    """What the handlers share: the pool, the optional host (the daemon) and its samples,
    access rules and refresh pacing."""

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        access: AdminAccess,
        host: Host | None,
        refresh_seconds: float,
        stats: StatsSource | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.access = access
        self.host = host
        self.refresh_seconds = refresh_seconds
        self.stats = stats
        self._refreshed = 0.0
        self._refresh_lock = asyncio.Lock()

    async def refresh_metrics(self) -> None:
        async with self._refresh_lock:
            if time.monotonic() - self._refreshed < self.refresh_seconds:
                return
            try:
                async with self.pool.connection(timeout=5) as conn:
                    await metrics.refresh(conn, self.host)
                    metrics.record_jobs(await jobs.list_jobs(conn) or [])
            except Exception as exc:  # serve the counters even when the database is away
                logger.warning("metrics refresh failed: %s", exc)
            self._refreshed = time.monotonic()


def _state(request: Request) -> WebState:
    state: WebState = request.app.state.web
    return state


async def healthz(request: Request) -> Response:
    metrics.HEARTBEAT.set(time.time())
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    web = _state(request)
    checks = await readiness(web.pool, web.host)
    ready = all(c.ok for c in checks)
    body = {
        "status": "ready" if ready else "unready",
        "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in checks},
    }
    return JSONResponse(body, status_code=200 if ready else 503)


async def metrics_endpoint(request: Request) -> Response:
    await _state(request).refresh_metrics()
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


async def index(request: Request) -> Response:
    if _state(request).access.enabled:
        return RedirectResponse("/admin", status_code=303)
    return PlainTextResponse("syncsvc: /metrics /healthz /readyz\n")


def _host_refused(access: AdminAccess, request: Request) -> Response | None:
    if access.host_allowed(request):
        return None
    logger.warning("admin request for host %r refused", request.headers.get("host"))
    return PlainTextResponse("host not allowed (add it to admin_allowed_hosts)\n", status_code=421)


def _denied(request: Request) -> Response | None:
    access = _state(request).access
    if not access.enabled:
        return PlainTextResponse(access.reason + "\n", status_code=404)
    if (refused := _host_refused(access, request)) is not None:
        return refused
    if not access.authorized(request):
        if request.method == "GET":
            return RedirectResponse("/login", status_code=303)
        return PlainTextResponse("unauthorized\n", status_code=401)
    if request.method == "POST" and not same_origin(request):
        return PlainTextResponse("cross-site request refused\n", status_code=403)
    return None


async def admin_page(request: Request) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    params = request.query_params
    return await _page(
        request,
        message=params.get("msg", ""),
        error=params.get("err", ""),
        refresh=params.get("refresh", "1") != "0",
    )


async def _page(
    request: Request,
    *,
    message: str = "",
    error: str = "",
    status: int = 200,
    refresh: bool = True,
) -> Response:
    web = _state(request)
    checks = await readiness(web.pool, web.host)
    try:
        async with web.pool.connection(timeout=5) as conn:
            data = await admin.gather(
                conn,
                checks,
                unpromoted_grace_seconds=web.settings.jobs.unpromoted_grace_seconds,
                promote_max_failed=web.settings.jobs.promote_max_failed,
                samples=None if web.stats is None else web.stats.get_stats(),
                stall_seconds=web.settings.admin_stall_seconds,
            )
    except (psycopg.OperationalError, PoolTimeout) as exc:
        # Away or saturated: say so (the daemon retries on its own), never a bare 500.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return PlainTextResponse(
            f"database unavailable: {reason}; this page works again once it answers\n",
            status_code=503,
            headers={"Retry-After": "5", "Cache-Control": "no-store"},
        )
    return templates().TemplateResponse(
        request,
        "admin.html",
        admin.context(data, message=message, error=error, refresh=refresh),
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


async def stats_endpoint(request: Request) -> Response:
    """The daemon's samples of the last hour, oldest first (what the charts draw)."""
    if (denied := _denied(request)) is not None:
        return denied
    source = _state(request).stats
    body = {
        "interval_seconds": source.interval if source else None,
        "window_seconds": source.window if source else None,
        "samples": [s.as_dict() for s in source.get_stats()] if source else [],
    }
    return JSONResponse(body, headers={"Cache-Control": "no-store"})


async def login(request: Request) -> Response:
    access = _state(request).access
    if not access.enabled:
        return PlainTextResponse(access.reason + "\n", status_code=404)
    if (refused := _host_refused(access, request)) is not None:
        return refused
    if access.token is None:
        return RedirectResponse("/admin", status_code=303)
    if request.method == "GET":
        return HTMLResponse(admin.login_page())
    if not same_origin(request):
        return PlainTextResponse("cross-site request refused\n", status_code=403)
    candidate = (await _form(request)).get("token", "")
    if not access.check_token(candidate):
        logger.warning("admin sign-in refused from %s", request.client)
        return HTMLResponse(admin.login_page("Wrong token."), status_code=401)
    response = RedirectResponse("/admin", status_code=303)
    response.set_cookie(
        COOKIE,
        candidate,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def _form(request: Request) -> dict[str, str]:
    """The posted form's text fields (the last of a repeated one), parsed by Starlette."""
    async with request.form() as form:
        return {k: v for k, v in form.items() if isinstance(v, str)}


def _back(message: str) -> Response:
    query = f"?msg={quote(message)}" if message else ""
    return RedirectResponse(f"/admin{query}", status_code=303)


async def _act(request: Request, what: str) -> Response:
    if (denied := _denied(request)) is not None:
        return denied
    web = _state(request)
    try:
        form = await _form(request)
        async with web.pool.connection(timeout=5) as conn:
            message = await actions.perform(conn, web.settings, what, form, request.path_params)
    except Exception as exc:
        refusal = actions.refusal_of(exc)
        if refusal is None:
            raise
        status, reason = refusal
        logger.warning("admin %s refused (%d): %s", what, status, reason)
        return await _refused(request, status, reason)
    logger.info("admin %s: %s", what, message)
    return _back(message=message)


async def _refused(request: Request, status: int, reason: str) -> Response:
    """The admin page with the refusal on it (a plain message if the page cannot be built)."""
    try:
        return await _page(request, error=reason, status=status)
    except Exception as exc:
        logger.warning("admin page unavailable: %s", exc)
        return PlainTextResponse(f"{reason}\n", status_code=status)


async def retry_failed(request: Request) -> Response:
    return await _act(request, "retry-failed")


async def start_job(request: Request) -> Response:
    return await _act(request, "start")


async def job_action(request: Request) -> Response:
    return await _act(request, "job")


async def target_action(request: Request) -> Response:
    return await _act(request, "target")


async def promote(request: Request) -> Response:
    return await _act(request, "promote")


async def logout(request: Request) -> Response:
    if not same_origin(request):  # another site may not sign the operator out either
        return PlainTextResponse("cross-site request refused\n", status_code=403)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def create_app(
    pool: Pool,
    settings: Settings,
    access: AdminAccess,
    *,
    host: Host | None = None,
    refresh_seconds: float = 2.0,
    stats: StatsSource | None = None,
) -> Starlette:
    """The Starlette application; the caller owns (opens and closes) ``pool``."""
    app = Starlette(
        middleware=[Middleware(SecurityHeaders)],
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/admin", admin_page),
            Route("/admin/stats", stats_endpoint),
            Route("/login", login, methods=["GET", "POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/admin/retry-failed", retry_failed, methods=["POST"]),
            Route("/admin/jobs/start", start_job, methods=["POST"]),
            # Not {job:int}: a malformed id is answered 400 with a reason, not a bare 404.
            Route("/admin/jobs/{job}/{action}", job_action, methods=["POST"]),
            Route("/admin/promote", promote, methods=["POST"]),
            Route("/admin/targets/{action}", target_action, methods=["POST"]),
        ],
    )
    app.state.web = WebState(pool, settings, access, host, refresh_seconds, stats)
    return app


SECURITY_HEADERS = [
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: browsers then send "Origin: null", and the same-origin check refuses forms.
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """ASGI middleware: no page of ours may be framed (clickjacking) or content-sniffed."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
