"""The wake-up channel: a dedicated LISTEN connection that reconnects by itself.

NOTIFY is only a hint that work may be waiting; losing one costs at most a poll interval,
because the queue table stays the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from syncsvc.statements import QUEUE_CHANNEL

logger = logging.getLogger(__name__)


class Listener:
    """Sets ``wake`` on every notification; ``connected`` tells readiness probes its state."""

    def __init__(
        self,
        url: str,
        wake: asyncio.Event,
        stop: asyncio.Event,
        *,
        channels: tuple[str, ...] = (QUEUE_CHANNEL,),
        keepalive_seconds: float = 30.0,
        max_backoff_seconds: float = 30.0,
    ) -> None:
        self.url = url
        self.wake = wake
        self.stop = stop
        self.channels = channels
        self.keepalive_seconds = keepalive_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.connected = False
        self.payloads: asyncio.Queue[tuple[str, str]] = asyncio.Queue(maxsize=1000)

    async def run(self) -> None:
        backoff = 0.5
        while not self.stop.is_set():
            try:
                await self._listen()
                backoff = 0.5
            except (psycopg.OperationalError, OSError) as exc:
                self.connected = False
                logger.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), backoff)
                backoff = min(self.max_backoff_seconds, backoff * 2)
        self.connected = False

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        try:
            for channel in self.channels:
                await conn.execute(
                    psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
                )
            self.connected = True
            # Anything committed while we were away is found by the next claim.
            self.wake.set()
            while not self.stop.is_set():
                async for notify in conn.notifies(timeout=self.keepalive_seconds):
                    self.wake.set()
                    if not self.payloads.full():
                        self.payloads.put_nowait((notify.channel, notify.payload))
                    if self.stop.is_set():
                        break
                # The keep-alive probe: a dead server or network surfaces here as an error.
                await conn.execute("SELECT 1")
        finally:
            self.connected = False
            await conn.close()
