"""Helpers for the operations tests: a daemon with its web service, probes, metric parsing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from syncsvc.core.settings import Settings
from syncsvc.daemon.process import Daemon, DaemonTaskDied
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse, ErrorKind, ProviderError
from syncsvc.ops import wiring as operations
from syncsvc.providers.local import LocalHashProvider
from syncsvc.web.server import WebService
from tests.helpers import fast_settings

POISON_ERROR = "Input data may contain inappropriate content."


class PoisonProvider(LocalHashProvider):
    """Rejects any text containing ``poison`` like DashScope's content inspection; optional
    per-request delay so a backfill takes long enough to watch."""

    def __init__(self, poison: str | None = "POISON", delay: float = 0.0) -> None:
        super().__init__()
        self.poison = poison
        self.delay = delay

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.poison and any(self.poison in t for t in request.texts):
            raise ProviderError(
                ErrorKind.BAD_INPUT,
                POISON_ERROR,
                code="DataInspectionFailed",
                status=400,
                request_id="req-poison-1",
            )
        return await super().embed(request)


def web_settings(**update: Any) -> Settings:
    base = {"metrics_address": "127.0.0.1:0", "admin_enabled": True}
    base.update(update)
    return fast_settings().model_copy(update=base)


@contextlib.asynccontextmanager
async def web_daemon(
    url: str,
    provider: Any | None = None,
    settings: Settings | None = None,
    *,
    configured_providers: bool = False,
) -> AsyncIterator[tuple[Daemon, WebService]]:
    """A daemon with the operations features installed and its web service bound; every
    provider is ``provider`` unless ``configured_providers`` (built from the settings)."""
    local = provider or PoisonProvider()
    daemon = Daemon(
        settings or web_settings(),
        url,
        provider_factory=None if configured_providers else (lambda name: local),
    )
    web = operations.install(daemon, refresh_seconds=0)
    assert web is not None
    task = asyncio.create_task(daemon.run())
    bound = asyncio.create_task(web.bound.wait())
    done, _ = await asyncio.wait({task, bound}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield daemon, web
    except BaseException:
        # Keep the test's own failure visible, not a shutdown error it caused.
        daemon.request_stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        raise
    daemon.request_stop()
    try:
        await asyncio.wait_for(task, 30)
    except DaemonTaskDied as exc:
        # A task that simply returned because we asked it to stop is not a failure.
        if exc.__cause__ is not None:
            raise


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(sample name, sorted labels): value}."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def value(data: dict[Any, float], name: str, **labels: str) -> float:
    return data.get((name, tuple(sorted(labels.items()))), 0.0)
