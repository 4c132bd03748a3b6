"""The lease keeper: a daemon's liveness and lease renewals, independent of its event loop.

On a saturated machine an event loop can fall seconds behind. Nothing that decides who owns a
claim may depend on it keeping up, so the keeper runs on a thread of its own with a connection
of its own: that session carries the daemon's liveness tag (other daemons never take over the
claims of a daemon with a session connected, see ``sql/queue.sql`` expire_leases) and renews the
leases of the rounds in progress every ``interval`` (a third of the lease: ample headroom).
"""

from __future__ import annotations

import logging
import threading

import psycopg

from syncsvc.queue.entries import Queue

logger = logging.getLogger(__name__)

RECONNECT_SECONDS = 1.0
"""How soon a lost keeper connection is tried again (the daemon's liveness rides on it)."""


class LeaseKeeperDied(RuntimeError):
    """The lease keeper's thread ended on an unexpected error."""


class LeaseKeeper:
    """Keeps ``queue``'s leases and the daemon's liveness session, on a thread."""

    def __init__(
        self,
        url: str,
        queue: Queue,
        *,
        application_name: str,
        interval: float,
        connect_timeout: int = 10,
    ) -> None:
        self.url = url
        self.queue = queue
        self.application_name = application_name
        self.interval = interval
        self.connect_timeout = connect_timeout
        self.renewals = 0
        """Renewals done so far (each renews every round in progress)."""
        self.connected = threading.Event()
        """Set while the keeper's session is connected."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self) -> None:
        """Start the thread: it connects, then renews every ``interval``."""
        self._thread = threading.Thread(target=self._run, name="syncsvc-lease-keeper", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop renewing and close the session (blocks up to ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def check(self) -> None:
        """Raise if the keeper's thread died (the daemon must then stop, loudly)."""
        if self._failure is not None:
            raise LeaseKeeperDied(f"lease keeper died: {self._failure!r}") from self._failure
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            raise LeaseKeeperDied("lease keeper thread ended")

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            self.url,
            autocommit=True,
            application_name=self.application_name,
            connect_timeout=self.connect_timeout,
        )

    def _run(self) -> None:
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        failing = False
        try:
            while not self._stop.is_set():
                wait = self.interval
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                        self.connected.set()
                    self.queue.renew_on(conn)
                    self.renewals += 1
                    if failing:
                        logger.info("lease keeper reconnected")
                    failing = False
                except psycopg.Error as exc:
                    self.connected.clear()
                    if not failing:
                        # Once per outage: the claimer reports the database being away too.
                        logger.warning("lease keeper lost the database; retrying: %s", exc)
                    failing = True
                    if conn is not None:
                        conn.close()
                        conn = None
                    wait = min(wait, RECONNECT_SECONDS)
                self._stop.wait(wait)
        except BaseException as exc:
            self._failure = exc
            logger.exception("lease keeper died")
        finally:
            self.connected.clear()
            if conn is not None:
                conn.close()
