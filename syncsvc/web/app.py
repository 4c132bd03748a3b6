"""The daemon's HTTP surface: ``/metrics``, ``/healthz``, ``/readyz`` and the admin page.

Probes and metrics are unauthenticated (orchestrators and Prometheus need them and they reveal
no row content). The admin page and its actions follow ``AdminAccess``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, quote

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

from syncsvc.capture import drift
from syncsvc.core.errors import NotFoundError, SyncsvcError
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.observe import metrics
from syncsvc.queue import failures
from syncsvc.web import admin, jobs
from syncsvc.web.auth import COOKIE, AdminAccess, same_origin
from syncsvc.web.health import readiness

if TYPE_CHECKING:
    from syncsvc.core.host import Host

logger = logging.getLogger(__name__)

Pool = AsyncConnectionPool[AsyncConn]
MAX_ID = 2**31 - 1
"""Job and generation ids are PostgreSQL integers."""


class WebState:
    """What the handlers share: the pool, the optional host (the daemon), access rules and
    refresh pacing."""

    def __init__(
        self,
        pool: Pool,
        settings: Settings,
        access: AdminAccess,
        host: Host | None,
        refresh_seconds: float,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.access = access
        self.host = host
        self.refresh_seconds = refresh_seconds
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
    return await _page(_state(request), message=params.get("msg", ""), error=params.get("err", ""))


async def _page(
    web: WebState, *, message: str = "", error: str = "", status: int = 200
) -> Response:
    checks = await readiness(web.pool, web.host)
    async with web.pool.connection(timeout=5) as conn:
        data = await admin.gather(
            conn,
            checks,
            unpromoted_grace_seconds=web.settings.jobs.unpromoted_grace_seconds,
            promote_max_failed=web.settings.jobs.promote_max_failed,
        )
    html = admin.render(data, message=message, error=error)
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


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
    # Plain urlencoded forms: no multipart dependency needed.
    parsed = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[-1] for k, v in parsed.items()}


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
            message = await _perform(conn, web, what, form, request.path_params)
    except Exception as exc:
        refusal = refusal_of(exc)
        if refusal is None:
            raise
        status, reason = refusal
        logger.warning("admin %s refused (%d): %s", what, status, reason)
        return await _refused(web, status, reason)
    logger.info("admin %s: %s", what, message)
    return _back(message=message)


def refusal_of(exc: Exception) -> tuple[int, str] | None:
    """The 4xx status and message for what an operator asked wrongly (None: our failure).

    Unknown names answer 404, values the database or syncsvc refuses 400, a clash with the
    current state 409, a database that is away 503: never 500 for the operator's input.
    """
    if isinstance(exc, KeyError):
        return 400, f"missing field {exc.args[0]!r}"
    if isinstance(exc, NotFoundError | jobs.Unavailable | psycopg.errors.NoDataFound):
        return 404, _message(exc)
    if isinstance(exc, psycopg.OperationalError | PoolTimeout):
        return 503, f"database unavailable: {_message(exc)}"
    if isinstance(exc, psycopg.IntegrityError):
        return 409, _message(exc)
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return 403, _message(exc)
    if isinstance(exc, psycopg.DataError | psycopg.errors.RaiseException):
        return 400, _message(exc)
    if isinstance(exc, SyncsvcError | ValueError):
        return 400, _message(exc)
    return None


def _message(exc: Exception) -> str:
    if isinstance(exc, psycopg.Error) and exc.diag.message_primary:
        return exc.diag.message_primary
    return str(exc) or type(exc).__name__


async def _refused(web: WebState, status: int, reason: str) -> Response:
    """The admin page with the refusal on it (a plain message if the page cannot be built)."""
    try:
        return await _page(web, error=reason, status=status)
    except Exception as exc:
        logger.warning("admin page unavailable: %s", exc)
        return PlainTextResponse(f"{reason}\n", status_code=status)


def _integer(value: str, name: str) -> int:
    """A form or path id: a whole number the database's integer ids can hold."""
    try:
        number = int(value.strip())
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if not 1 <= number <= MAX_ID:
        raise ValueError(f"{name} must be between 1 and {MAX_ID}, not {number}")
    return number


async def _perform(
    conn: AsyncConn, web: WebState, what: str, form: dict[str, str], path: dict[str, str]
) -> str:
    if what == "retry-failed":
        target = form.get("target", "").strip() or None
        count = await failures.retry_failed(conn, target)
        return f"{count} failed rows queued again" + (f" for {target}" if target else "")
    if what == "start":
        return await jobs.start(
            conn,
            web.settings,
            form["target"],
            model=form["model"].strip(),
            dimensions=_integer(form["dimensions"], "dimensions"),
            provider=form.get("provider", "").strip() or None,
            dry_run=form.get("mode", "dry-run") != "start",
        )
    if what == "job":
        return await jobs.control(conn, _integer(str(path["job"]), "job id"), path["action"])
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
            _integer(form["generation"], "generation"),
            accept_failed=form.get("accept_failed") == "1",
            max_failed=web.settings.jobs.promote_max_failed,
        )
    raise ValueError(f"unknown action {what!r}")


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
    app.state.web = WebState(pool, settings, access, host, refresh_seconds)
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
