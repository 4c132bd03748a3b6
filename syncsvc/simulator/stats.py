"""Counters the simulator exposes at ``/_sim/stats``, and its per-window rate enforcement."""

from __future__ import annotations

import time
from typing import Any


class Window:
    """A fixed-window budget: ``per_minute / 60`` per one-second window, like DashScope.

    Below one unit per second the window widens so that at least one unit fits. The first
    request of a window is always admitted, so one input larger than a window's token budget
    is slow rather than impossible.
    """

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._seconds = 1.0 if not per_minute else max(1.0, 60 / per_minute)
        self._limit = 0.0 if not per_minute else per_minute * self._seconds / 60
        self._index = -1
        self._used = 0.0

    def _roll(self, now: float) -> None:
        index = int(now // self._seconds)
        if index != self._index:
            self._index = index
            self._used = 0.0

    def fits(self, amount: float, now: float) -> bool:
        if not self.per_minute:
            return True
        self._roll(now)
        return self._used == 0 or self._used + amount <= self._limit

    def commit(self, amount: float, now: float) -> None:
        if self.per_minute:
            self._roll(now)
            self._used += amount


class Counters:
    """What the simulator saw; tests assert on these."""

    def __init__(self) -> None:
        self.requests = 0
        self.ok = 0
        self.inputs = 0
        self.tokens = 0
        self.rate_limited = 0
        self.rate_limited_late = 0
        """429s more than a second after the first request: a paced client should have none."""
        self.first_request_at: float | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.by_route: dict[str, int] = {}
        self.by_status: dict[str, int] = {}
        self.faults: dict[str, int] = {}
        self.batch_sizes: dict[str, int] = {}

    def begin(self, route: str) -> None:
        if self.first_request_at is None:
            self.first_request_at = time.monotonic()
        self.requests += 1
        self.by_route[route] = self.by_route.get(route, 0) + 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def end(self, status: int) -> None:
        self.in_flight -= 1
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1

    def throttled(self) -> None:
        self.rate_limited += 1
        first = self.first_request_at
        if first is not None and time.monotonic() - first > 1.0:
            self.rate_limited_late += 1

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def served(self, inputs: int, tokens: int) -> None:
        self.ok += 1
        self.inputs += inputs
        self.tokens += tokens
        key = str(inputs)
        self.batch_sizes[key] = self.batch_sizes.get(key, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "inputs": self.inputs,
            "tokens": self.tokens,
            "rate_limited": self.rate_limited,
            "rate_limited_late": self.rate_limited_late,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "by_route": dict(self.by_route),
            "by_status": dict(self.by_status),
            "faults": dict(self.faults),
            "batch_sizes": dict(self.batch_sizes),
        }
