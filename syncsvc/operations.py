"""Wire the operations features into a daemon: metrics hooks, scale-out, the web service.

``syncsvc run`` calls ``install`` once on its daemon; tests call it on theirs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncsvc import metrics
from syncsvc.coordination import Coordinator
from syncsvc.web.health import health_service
from syncsvc.web.server import WebService

if TYPE_CHECKING:
    from syncsvc.daemon import Daemon


def install(daemon: Daemon, *, refresh_seconds: float = 2.0) -> WebService | None:
    """Add round metrics, the readiness timer, the shared rate budget, the scheduler election,
    and (when ``metrics_address`` is set) the HTTP service; returns that service, if any."""
    daemon.hooks.append(metrics.record_round)
    daemon.add_service("health", health_service)
    Coordinator(daemon.url, daemon.id).install(daemon)
    address = daemon.settings.metrics_address
    if not address:
        return None
    web = WebService(address, refresh_seconds=refresh_seconds)
    daemon.add_service("web", web)
    return web
