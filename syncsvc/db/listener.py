"""The wake-up channel: a dedicated LISTEN connection that reconnects by itself.

NOTIFY is only a hint that work may be waiting; losing one costs at most a poll interval,
because the queue table stays the truth.
"""

from __future__ import annotations

import asyncio
import logging

import psycopg

from syncsvc.core.waiting import sleep_unless
from syncsvc.db import quoting, sqlfiles
from syncsvc.db.statements import QUEUE_CHANNEL

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
                await sleep_unless(self.stop, backoff)
                backoff = min(self.max_backoff_seconds, backoff * 2)
        self.connected = False

    async def _listen(self) -> None:
        conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
        try:
            conn.add_notify_handler(self._received)
            for channel in self.channels:
                await conn.execute(psycopg.sql.SQL("LISTEN {}").format(quoting.ident(channel)))
            self.connected = True
            # Anything committed while we were away is found by the next claim.
            self.wake.set()
            await self._wait_for_notifications(conn)
        finally:
            self.connected = False
            await conn.close()

    def _received(self, notify: psycopg.Notify) -> None:
        self.wake.set()
        if not self.payloads.full():
            self.payloads.put_nowait((notify.channel, notify.payload))

    async def _wait_for_notifications(self, conn: psycopg.AsyncConnection[object]) -> None:
        """Sleep until the socket is readable, then hand the notifications to the handler.

        psycopg's ``notifies()`` wakes every 100 ms to check for interrupts; an idle daemon
        would pay for that forever. Readability costs nothing until a notification arrives.
        """
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = conn.fileno()
        while not self.stop.is_set():
            loop.add_reader(fd, readable.set)
            stopped = asyncio.ensure_future(self.stop.wait())
            ready = asyncio.ensure_future(readable.wait())
            try:
                done, _ = await asyncio.wait(
                    {stopped, ready},
                    timeout=self.keepalive_seconds,
                    return_when=asyncio.FIRST_COMPLETED,
                )
            finally:
                loop.remove_reader(fd)
                stopped.cancel()
                ready.cancel()
            if self.stop.is_set():
                return
            if not done:
                # The keep-alive probe: a dead server or network surfaces here as an error
                # (notifications that arrive meanwhile reach the handler too).
                await conn.execute(sqlfiles.query("ops", "ping"))
                continue
            readable.clear()
            conn.pgconn.consume_input()  # fails (OperationalError) when the server is gone
            while (raw := conn.pgconn.notifies()) is not None:
                self._received(psycopg.Notify(raw.relname.decode(), raw.extra.decode(), raw.be_pid))
