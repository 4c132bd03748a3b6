"""Client-side request and token budgets, with an adaptive slow-down on 429.

DashScope enforces RPM and TPM per second (RPM/60 and TPM/60 in each one-second window), so a
budget that allows a one-minute burst gets throttled at once. The buckets here hold only a small
fraction of a second's allowance and refill continuously a little below the configured rate, so
any one-second window stays under the server's cap. A 429 pauses every caller until the
server's ``Retry-After`` (or a default) and cuts the rate; successes win it back gradually.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SAFETY = 0.95
"""Fraction of the configured budget actually used: timing jitter must not cross the cap."""
BURST_SECONDS = 0.05
"""Bucket capacity as a fraction of a second's allowance (at least one request)."""
DEFAULT_PAUSE = 1.0
"""Pause after a 429 without Retry-After: limits are per second, so the next window is free."""
MAX_PAUSE = 60.0
CUT = 0.8
RECOVERY = 0.02
MIN_FACTOR = 0.1
OBSERVE_SECONDS = 5.0
MIN_OBSERVED = 4
"""Below this many requests in the last second a 429 says nothing about our rate (a quota
shared with other clients, a blip): pause, but do not learn a rate from it."""


class TokenBucket:
    """A leaky budget: ``rate`` units per second, at most ``capacity`` saved up, debt allowed.

    Debt lets one request larger than the capacity through (after waiting for a full bucket) so
    a big input is never starved; the next callers then wait for the debt to be repaid.
    """

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self._level = capacity
        self._stamp = now

    def _refill(self, now: float) -> None:
        self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
        self._stamp = now

    def delay(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` (capped at the capacity) is available."""
        self._refill(now)
        needed = min(amount, self.capacity) - self._level
        return 0.0 if needed <= 0 else needed / self.rate

    def take(self, amount: float, now: float) -> None:
        self._refill(now)
        self._level -= amount


@dataclass(frozen=True)
class LimiterStats:
    requests: int
    tokens: int
    rate_limited: int
    waited_seconds: float
    factor: float
    """Current fraction of the configured (or learned) rate in use, 1.0 when unthrottled."""


class RateLimiter:
    """Paces requests to RPM/TPM budgets (either may be None) and reacts to 429s."""

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        default_pause: float = DEFAULT_PAUSE,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._default_pause = default_pause
        self._factor = 1.0
        self._learned_rps: float | None = None
        """Without a configured RPM, a 429 teaches us the rate the server tolerates."""
        now = clock()
        self._requests = self._bucket(rpm / 60 if rpm else None, now)
        self._tokens = self._bucket(tpm / 60 if tpm else None, now)
        self._resume_at = 0.0
        self._last_cut = -MAX_PAUSE
        self._recent: deque[float] = deque()
        self._lock: asyncio.Lock | None = None
        self._counts = [0, 0, 0]
        self._waited = 0.0

    @staticmethod
    def _bucket(per_second: float | None, now: float) -> TokenBucket | None:
        if per_second is None:
            return None
        rate = per_second * SAFETY
        return TokenBucket(rate, max(1.0, per_second * BURST_SECONDS), now)

    @property
    def max_tokens_per_request(self) -> int | None:
        """The largest request a one-second TPM window can take (None if unlimited)."""
        return None if self.tpm is None else max(1, int(self.tpm / 60 * SAFETY))

    async def acquire(self, tokens: int) -> None:
        """Wait until one request of ``tokens`` tokens fits the budgets, then spend them."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        # One waiter at a time keeps callers in FIFO order and the buckets consistent.
        async with self._lock:
            started = self._clock()
            while True:
                now = self._clock()
                wait = max(0.0, self._resume_at - now)
                if self._requests is not None:
                    wait = max(wait, self._requests.delay(1, now))
                if self._tokens is not None:
                    wait = max(wait, self._tokens.delay(tokens, now))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self._requests is not None:
                self._requests.take(1, now)
            if self._tokens is not None:
                self._tokens.take(tokens, now)
            self._recent.append(now)
            while self._recent and self._recent[0] < now - OBSERVE_SECONDS:
                self._recent.popleft()
            self._counts[0] += 1
            self._counts[1] += tokens
            self._waited += now - started

    def on_success(self) -> None:
        """Additive recovery: each success gives back a little of the rate cut by 429s."""
        if self._factor < 1.0:
            self._factor = min(1.0, self._factor + RECOVERY)
            self._apply()
        elif self._learned_rps is not None:
            # Probe upwards so a limit learned during a transient squeeze does not stick.
            self._learned_rps *= 1.0 + RECOVERY / 2
            if self._requests is not None:
                self._requests.rate = self._learned_rps

    def on_rate_limited(self, retry_after: float | None) -> float:
        """Pause every caller and cut the rate; returns the pause in seconds."""
        now = self._clock()
        pause = min(MAX_PAUSE, retry_after if retry_after is not None else self._default_pause)
        self._resume_at = max(self._resume_at, now + pause)
        self._counts[2] += 1
        # Concurrent requests see the same throttled second: cut once per second, not per 429.
        if now - self._last_cut >= 1.0:
            self._last_cut = now
            observed = sum(1 for t in self._recent if t >= now - 1.0)
            if self.rpm is None and observed >= MIN_OBSERVED:
                learned = observed * CUT
                self._learned_rps = learned
                self._requests = TokenBucket(learned, 1.0, now)
                logger.info("429 without a configured RPM: pacing at %.1f requests/s", learned)
            elif self.rpm is not None:
                self._factor = max(MIN_FACTOR, self._factor * CUT)
                self._apply()
                logger.info("429: pacing at %.0f%% of the configured budget", self._factor * 100)
        return pause

    def _apply(self) -> None:
        if self._requests is not None and self.rpm:
            self._requests.rate = self.rpm / 60 * SAFETY * self._factor
        if self._tokens is not None and self.tpm:
            self._tokens.rate = self.tpm / 60 * SAFETY * self._factor

    def stats(self) -> LimiterStats:
        return LimiterStats(
            requests=self._counts[0],
            tokens=self._counts[1],
            rate_limited=self._counts[2],
            waited_seconds=self._waited,
            factor=self._factor,
        )
