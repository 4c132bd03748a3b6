"""The shared types, defined once: the connection type, sweep and round callbacks, round stats.

``Service`` lives beside the ``Host`` it takes (``syncsvc.core.host``); ``ProviderFactory`` and
``ProviderWrapper`` beside the ``EmbeddingProvider`` Protocol they name
(``syncsvc.embed.provider``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

Row = dict[str, Any]
"""A result row: every connection syncsvc opens returns dict rows."""

AsyncConn = psycopg.AsyncConnection[Row]
"""The connection type of every pool and connection syncsvc opens."""

Sweep = Callable[[int | None], Awaitable[int]]
"""A sweep: of every target (None) or of one; returns the rows enqueued."""

SweepGate = Callable[[Sweep], Sweep]
"""Wraps the daemon's sweep (e.g. so that only the scheduler leader runs it)."""


@dataclass
class RoundStats:
    """What one round did; summed by the daemon for status and metrics."""

    claimed: int = 0
    embedded: int = 0
    unchanged: int = 0
    removed: int = 0
    stale: int = 0
    failed: int = 0
    released: int = 0
    tokens: int = 0
    per_target: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: RoundStats) -> None:
        for name in ("claimed", "embedded", "unchanged", "removed", "stale", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.released += other.released
        self.tokens += other.tokens
        for key, value in other.per_target.items():
            self.per_target[key] += value


RoundHook = Callable[[RoundStats], Awaitable[None] | None]
"""Called with each finished round's stats (e.g. the metrics counters)."""
