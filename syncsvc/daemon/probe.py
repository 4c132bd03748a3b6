"""Resuming targets the provider refused: one tiny request, backing off, until it works.

A target paused for an authentication or configuration reply (a revoked key, arrears, a bad
base URL) resumes by itself once its provider answers again: the operator fixes the key or
the account and does nothing else. Operator pauses and drift pauses are left alone.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from psycopg_pool import AsyncConnectionPool

from syncsvc.capture import drift
from syncsvc.core.models import PROVIDER_PAUSE, Generation
from syncsvc.core.types import AsyncConn
from syncsvc.core.waiting import sleep_unless
from syncsvc.db.catalog import load_targets
from syncsvc.embed.embedder import Embedder
from syncsvc.embed.items import Embedded, EmbedInput, ProviderPaused

logger = logging.getLogger(__name__)

"""The prefix of the reason the worker pauses a target with after an AUTH-class reply."""


class ProbeHost(Protocol):
    """What the probe needs of a daemon."""

    @property
    def pool(self) -> AsyncConnectionPool[AsyncConn]: ...

    @property
    def stop_event(self) -> asyncio.Event: ...

    @property
    def wake(self) -> asyncio.Event: ...

    def embedder_for(self, generation: Generation) -> Embedder: ...


async def probe_once(host: ProbeHost) -> list[str]:
    """Probe every provider-paused target once; returns the names resumed."""
    async with host.pool.connection() as conn:
        paused = [
            t
            for t in await load_targets(conn)
            if t.paused_reason and t.paused_reason.startswith(PROVIDER_PAUSE)
        ]
    resumed = []
    for target in paused:
        generation = target.active
        if generation is None:
            continue
        embedder = host.embedder_for(generation)
        try:
            outcome = await embedder.embed([EmbedInput("probe", "ping")])
        except ProviderPaused as still:
            logger.info("target %s: provider still refuses (%s)", target.name, still.error)
            continue
        if isinstance(outcome.get("probe"), Embedded):
            async with host.pool.connection() as conn:
                await drift.resume(conn, target.name)
            logger.info("target %s resumed: its provider answers again", target.name)
            resumed.append(target.name)
    if resumed:
        host.wake.set()
    return resumed


async def probe_service(host: ProbeHost) -> None:
    """Daemon service: probe with exponential backoff (15 s doubling to 5 min)."""
    await probe_loop(host, first_delay=15.0, max_delay=300.0)


async def probe_loop(host: ProbeHost, *, first_delay: float, max_delay: float) -> None:
    delay = first_delay
    while not host.stop_event.is_set():
        if await sleep_unless(host.stop_event, delay):
            return
        try:
            resumed = await probe_once(host)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a probe is best effort; the daemon goes on
            logger.warning("provider probe failed: %s", exc)
            resumed = []
        delay = first_delay if resumed else min(max_delay, delay * 2)
