"""Repeated errors, quietly: one line per distinct error per interval, with a count.

A loop that fails every second (a database away, a broken target) would otherwise print a
traceback per iteration. The first occurrence logs with its traceback at debug level, and
every occurrence counts in ``syncsvc_daemon_errors_total``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from syncsvc.observe import metrics

logger = logging.getLogger(__name__)


@dataclass
class _Seen:
    last_logged: float
    suppressed: int = 0
    last_seen: float = 0.0


class RepeatedErrors:
    """Logs each distinct (message, error type, error text) at most once per ``interval``."""

    def __init__(self, interval_seconds: float = 60.0) -> None:
        self.interval = interval_seconds
        self._seen: dict[tuple[str, str, str], _Seen] = {}

    def report(self, message: str, *args: object, exc: BaseException) -> bool:
        """Count the error; log it unless it was logged within the interval. True if logged."""
        text = message % args if args else message
        key = (text, type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc) else "")
        metrics.DAEMON_ERRORS.labels(kind=type(exc).__name__).inc()
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen.last_logged < self.interval:
            seen.suppressed += 1
            seen.last_seen = now
            return False
        repeats = f" (repeated {seen.suppressed} more times)" if seen and seen.suppressed else ""
        logger.error("%s: %s: %s%s", text, type(exc).__name__, key[2], repeats)
        if seen is None:
            logger.debug("first occurrence of: %s", text, exc_info=exc)
        self._seen[key] = _Seen(now, last_seen=now)
        return True

    def recent(self, seconds: float = 60.0) -> list[str]:
        """The distinct errors seen in the last ``seconds`` (for /readyz detail)."""
        now = time.monotonic()
        return [
            f"{text}: {kind}: {error}"
            for (text, kind, error), seen in self._seen.items()
            if now - seen.last_seen <= seconds
        ]
