"""The seam between the daemon and its background services.

Services (backfill, indexes, progress, schedule, metrics, coordination, the web service) get a
``Host``: what they may use of the process that runs them, and a ``snapshot()`` of the state
they may read, the way psycopg_pool offers ``get_stats()`` instead of its private fields. The
daemon is one Host; tests may pass any object of this shape.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from syncsvc.core.settings import Settings
    from syncsvc.core.types import AsyncConn


@dataclass(frozen=True)
class HostSnapshot:
    """What others may read of a running host, copied at one moment."""

    rounds_in_flight: int = 0
    listener_connected: bool = False
    stopping: bool = False
    limit_factors: dict[str, float] = field(default_factory=dict)
    """Per provider name, its rate limiter's current factor (1.0 = the configured budget)."""
    recent_errors: tuple[str, ...] = ()
    embedded: int = 0
    """Rows embedded since the host started."""
    embedded_per_target: dict[str, int] = field(default_factory=dict)


class Host(Protocol):
    """What a background service may use of the process it runs in."""

    @property
    def id(self) -> str: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConn]: ...

    @property
    def stop_event(self) -> asyncio.Event: ...

    @property
    def wake(self) -> asyncio.Event: ...

    async def sweep(self, target_id: int | None = None) -> int:
        """Enqueue missing or stale rows (through the sweep gate, if one is installed)."""
        ...

    def snapshot(self) -> HostSnapshot: ...


Service = Callable[[Host], Coroutine[Any, Any, None]]
"""A long-running coroutine run beside the daemon's own tasks (jobs feeder, metrics server);
it gets the ``Host`` and runs until its stop event is set."""
