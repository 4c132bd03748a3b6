"""Client-side request and token budgets, with an adaptive slow-down on 429.

DashScope enforces RPM and TPM per second (RPM/60 and TPM/60 in each one-second window), so a
budget that allows a one-minute burst gets throttled at once, and so does a token bucket: it
bounds the long-run rate, but two large requests can still land in the same server window. A
sliding one-second log bounds every one-second interval, hence every fixed window the server
can use. The window is a little longer than a second and the budget a little lower than the cap
so network jitter cannot push one request across into a full window. Requests are also spaced
evenly (GCRA: one every window/budget seconds, a burst of a few allowed) instead of spending a
window's budget in one burst and then waiting out the rest: a live edit arriving in such a gap
would wait for it, and bursts are what a server's windows punish. A 429 pauses every caller
until the server's ``Retry-After`` (or a default) and cuts the budget; successes win it back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from syncsvc.embed.gate import PriorityGate

logger = logging.getLogger(__name__)

SAFETY = 0.97
"""Fraction of the configured budget actually used."""
WINDOW = 1.04
"""Seconds over which a one-second budget is counted (jitter margin)."""
WIDEN = 0.03
MAX_WINDOW = 1.25
"""A 429 under a budget we honour means our send times drift from the server's clock (a busy
event loop delays requests after they were counted): widen the margin, up to this."""
DEFAULT_PAUSE = 1.0
"""Pause after a 429 without Retry-After: limits are per second, so the next window is free."""
MAX_PAUSE = 60.0
CUT = 0.8
RECOVERY = 0.02
MIN_FACTOR = 0.1
BURST = 4
"""Requests that may go back to back (GCRA tolerance, in spacing intervals): an idle client's
first few requests do not wait, and a late timer wake-up does not lose the interval."""
MIN_OBSERVED = 4
"""Below this many requests in the last second a 429 says nothing about our rate (a quota
shared with other clients, a blip): pause, but do not learn a rate from it."""


class SlidingWindow:
    """At most ``limit`` units in any ``WINDOW``-second interval.

    An amount larger than the whole limit is admitted only into an empty window, so a big
    input is slow rather than impossible (the simulator's server does the same).
    """

    def __init__(self, limit: float, window: float = WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._log: deque[tuple[float, float]] = deque()
        self._sum = 0.0

    def _expire(self, now: float) -> None:
        while self._log and self._log[0][0] <= now - self.window:
            self._sum -= self._log.popleft()[1]
        if not self._log:
            self._sum = 0.0  # no float drift once empty

    def delay(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` fits."""
        self._expire(now)
        if not self._log or self._sum + amount <= self.limit:
            return 0.0
        remaining = self._sum
        for stamp, spent in self._log:
            remaining -= spent
            if remaining <= 0 or remaining + amount <= self.limit:
                return max(0.0, stamp + self.window - now)
        return 0.0  # unreachable: the loop empties the log

    def take(self, amount: float, now: float) -> None:
        self._expire(now)
        self._log.append((now, amount))
        self._sum += amount

    def spent(self, now: float) -> float:
        self._expire(now)
        return self._sum


@dataclass(frozen=True)
class LimiterStats:
    requests: int
    tokens: int
    rate_limited: int
    waited_seconds: float
    factor: float
    """Current fraction of the configured (or learned) rate in use, 1.0 when unthrottled."""
    window_seconds: float
    """Interval over which a one-second budget is currently counted."""


class RateLimiter:
    """Paces requests to RPM/TPM budgets (either may be None) and reacts to 429s."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        default_pause: float = DEFAULT_PAUSE,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        # Injectable, so the pacing is tested on a virtual clock rather than a loaded machine's.
        self._clock = clock
        self._sleep = sleep
        self._default_pause = default_pause
        self._factor = 1.0
        self._learned_rps: float | None = None
        """Without a configured RPM, a 429 teaches us the rate the server tolerates."""
        # Requests are always logged: without a budget the log is what a 429 learns from.
        self._requests = SlidingWindow(rpm / 60 * SAFETY if rpm else math.inf)
        self._tokens = SlidingWindow(tpm / 60 * SAFETY) if tpm else None
        self._resume_at = 0.0
        self._theoretical = 0.0
        """GCRA's theoretical arrival time of the next request (spacing, not bursts)."""
        self._last_cut = -MAX_PAUSE
        self._turn = PriorityGate(1)
        self._counts = [0, 0, 0]
        self._waited = 0.0

    @property
    def max_tokens_per_request(self) -> int | None:
        """The largest request a one-second TPM window can take (None if unlimited)."""
        return None if self.tpm is None else max(1, int(self.tpm / 60 * SAFETY))

    async def acquire(self, tokens: int, priority: int = 0, tenant: Hashable = None) -> None:
        """Wait until one request of ``tokens`` tokens fits the budgets, then spend them.

        Waiters take turns by ``priority`` (lower first), first come first served within one:
        under a rate cap a live edit's request goes before the backfill's already waiting.
        """
        # One waiter at a time keeps the buckets consistent.
        async with self._turn.slot(priority, tenant):
            started = self._clock()
            while True:
                now = self._clock()
                spacing = self._spacing()
                early = self._theoretical - BURST * spacing - now
                wait = max(0.0, self._resume_at - now, early)
                wait = max(wait, self._requests.delay(1, now))
                if self._tokens is not None:
                    wait = max(wait, self._tokens.delay(tokens, now))
                if wait <= 0:
                    break
                await self._sleep(wait)
            self._requests.take(1, now)
            self._theoretical = max(self._theoretical, now) + spacing
            if self._tokens is not None:
                self._tokens.take(tokens, now)
            self._counts[0] += 1
            self._counts[1] += tokens
            self._waited += now - started

    def _spacing(self) -> float:
        limit = self._requests.limit
        return 0.0 if limit == math.inf else self._requests.window / limit

    def on_success(self) -> None:
        """Additive recovery: each success gives back a little of the rate cut by 429s."""
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + RECOVERY)
            self._apply()
        elif self._learned_rps is not None:
            # Probe upwards so a limit learned during a transient squeeze does not stick.
            self._learned_rps *= 1.0 + RECOVERY / 2
            self._requests.limit = self._learned_rps

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Pause every caller and cut the rate; returns the pause in seconds."""
        now = self._clock()
        pause = min(MAX_PAUSE, retry_after if retry_after is not None else self._default_pause)
        self._resume_at = max(self._resume_at, now + pause)
        self._counts[2] += 1
        # Concurrent requests see the same throttled second: cut once per second, not per 429.
        if now - self._last_cut >= 1.0:
            self._last_cut = now
            observed = self._requests.spent(now)
            if self.rpm is None and observed >= MIN_OBSERVED:
                learned = observed * CUT
                self._learned_rps = learned
                self._requests.limit = learned
                logger.info("429 without a configured RPM: pacing at %.1f requests/s", learned)
            elif self.rpm is not None or self.tpm is not None:
                for window in (self._requests, self._tokens):
                    if window is not None and window.limit != math.inf:
                        window.window = min(MAX_WINDOW, window.window + WIDEN)
                self._factor = max(MIN_FACTOR, self._factor * CUT)
                self._apply()
                logger.info("429: pacing at %.0f%% of the configured budget", self._factor * 100)
        return pause

    def _apply(self) -> None:
        if self.rpm:
            self._requests.limit = self.rpm / 60 * SAFETY * self._factor
        if self._tokens is not None and self.tpm:
            self._tokens.limit = self.tpm / 60 * SAFETY * self._factor

    def stats(self) -> LimiterStats:
        return LimiterStats(
            requests=self._counts[0],
            tokens=self._counts[1],
            rate_limited=self._counts[2],
            waited_seconds=self._waited,
            factor=self._factor,
            window_seconds=self._requests.window,
        )
