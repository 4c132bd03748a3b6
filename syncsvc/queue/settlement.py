"""When a claimed entry may be completed: once every generation it needs has its vector.

During a re-embed a row may need a vector in the active generation and in the one being built;
the two are written by separate transactions as their requests return. An entry is completed
in the transaction of the write that finishes it only when that write is the last one it waits
for; when two writes finish it at once (each saw the other still pending), it is completed
after both have committed. So a crash or a failed write never leaves an entry completed while
one of its vectors is missing: it stays claimed, and whoever claims it again embeds only what
is missing (the stored content hashes say what is current).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field

from syncsvc.core.models import ClaimedItem
from syncsvc.queue.entries import Failure


@dataclass
class Settlement:
    """The entries of one target's round, counted down per generation written."""

    items: dict[Hashable, ClaimedItem]
    """Entries by key."""
    failures: dict[Hashable, Failure]
    """Entries that failed (shared with the round: a failed entry is never completed)."""
    remaining: dict[Hashable, int] = field(default_factory=dict)
    """Writes each entry still waits for."""
    completed: set[Hashable] = field(default_factory=set)

    def expect(self, keys: Iterable[Hashable]) -> None:
        """One more write for each of ``keys`` (one per generation that needs a vector)."""
        for key in keys:
            self.remaining[key] = self.remaining.get(key, 0) + 1

    def finishing(self, keys: Iterable[Hashable]) -> list[ClaimedItem]:
        """The entries a write of ``keys`` finishes by itself (no other write outstanding):
        completed in that write's own transaction."""
        return [
            self.items[key]
            for key in keys
            if self.remaining.get(key) == 1 and key not in self.failures
        ]

    def settle(self, keys: Iterable[Hashable], finished: list[ClaimedItem]) -> list[ClaimedItem]:
        """Count a committed write (or a failed outcome) of ``keys``; ``finished``: what its
        transaction completed. Returns the entries it finished besides: complete them now."""
        done = {id(item) for item in finished}
        later = []
        for key in keys:
            self.remaining[key] -= 1
            if self.remaining[key] == 0 and key not in self.failures:
                self.completed.add(key)
                if id(self.items[key]) not in done:
                    later.append(self.items[key])
        return later
