"""The composition root: wire the operations features into a daemon.

Metrics hooks, scale-out, the web service. ``syncsvc run`` calls ``install`` once on its
daemon; tests call it on theirs. This module and the CLI are the only ones that know the
``Daemon`` class: the services they add get it as a ``syncsvc.core.host.Host``, and the
coordinator's sweep gate and provider wrapper are handed to it, not patched onto it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from syncsvc.daemon.walreader import wal_service
from syncsvc.observe import metrics
from syncsvc.observe.history import StatsHistory
from syncsvc.ops.coordination import Coordinator
from syncsvc.web.health import health_service
from syncsvc.web.server import WebService

if TYPE_CHECKING:
    from syncsvc.daemon.process import Daemon


def install(daemon: Daemon, *, refresh_seconds: float = 2.0) -> WebService | None:
    """Add round metrics, the readiness timer, the shared rate budget, the scheduler election,
    and (when ``metrics_address`` is set) the HTTP service with the samples its admin page
    charts; returns that service, if any."""
    daemon.hooks.append(metrics.record_round)
    daemon.add_service("health", health_service)
    # Idle unless a target captures from the WAL; one daemon at a time reads the slot.
    daemon.add_service("wal", wal_service)
    coordinator = Coordinator(daemon.url, daemon.id)
    # Providers are built lazily by the worker; wrapping its factory covers every one.
    daemon.worker.wrap_provider_factory(coordinator.shared)
    # Cron-scheduled sweeps are already claimed by exactly one daemon per firing
    # (``syncsvc.daemon.schedule``); only the every-daemon interval sweep needs a leader.
    if not any(entry.action == "sweep" for entry in daemon.settings.schedules.values()):
        daemon.gate_sweep(coordinator.gate)
    daemon.add_service("coordination", coordinator.run)
    address = daemon.settings.metrics_address
    if not address:
        return None
    # The last hour in memory, for the admin page's charts and stalled states.
    history = StatsHistory(daemon.settings.admin_sample_seconds)
    daemon.add_service("stats", history.run)
    web = WebService(address, refresh_seconds=refresh_seconds, stats=history)
    daemon.add_service("web", web)
    return web
