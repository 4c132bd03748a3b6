"""A daemon in its own process, for kill -9 tests: ``python -m tests.jobs_proc URL LOG``.

Its provider is the local one, slowed down, and appends the size of every request it served
to LOG (flushed at once), so the test counts embedding inputs across a SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from syncsvc.daemon.process import Daemon
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse
from syncsvc.providers.local import LocalHashProvider
from tests.jobs_support import job_settings


class LoggingProvider(LocalHashProvider):
    def __init__(self, log: str, delay: float) -> None:
        super().__init__()
        self.log = log
        self.delay = delay

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        await asyncio.sleep(self.delay)
        response = await super().embed(request)
        # Appended and closed at once: the count survives the SIGKILL that ends this process.
        with open(self.log, "a", encoding="utf-8") as out:  # noqa: ASYNC230
            out.write(f"{len(request.texts)}\n")
        return response


async def main(url: str, log: str) -> None:
    worker: dict[str, Any] = {"claim_size": 20, "lease_seconds": 2, "rounds_in_flight": 2}
    settings = job_settings(worker=worker, max_queued_rows=200)
    provider = LoggingProvider(log, delay=0.03)
    daemon = Daemon(settings, url, provider_factory=lambda name: provider)
    daemon.install_signal_handlers()
    await daemon.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
