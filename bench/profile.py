"""Where a profiled process spent its time: py-spy's raw (collapsed) stacks, summarised.

``py-spy record --idle --format raw`` writes one line per distinct stack, ``frame;frame;... N``
with N samples. Idle samples end in the event loop's ``select``: their share is the time
the daemon waited on sockets and timers; the rest is split by the first syncsvc frame of each
stack, the part of the pipeline that was running.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass(frozen=True)
class Profile:
    samples: int
    idle: float
    """Share of samples waiting in the event loop's select (sockets, timers)."""
    parts: list[tuple[str, float]]
    """(syncsvc function, share of all samples) for the busy samples, largest first."""


def _where(frames: list[str]) -> str:
    """The innermost syncsvc frame: the part of the pipeline that was running."""
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        file = "/" + match["file"] if match else ""
        if "/syncsvc/" in file and "/syncsvc/cli/" not in file:
            module = file.rsplit("/syncsvc/", 1)[1].removesuffix(".py")
            return f"{module.replace('/', '.')}: {match['function'] if match else ''}"
    return "(outside syncsvc)"


def summarise(path: Path, top: int = 8) -> Profile:
    counts: Counter[str] = Counter()
    idle = total = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = stack.split(";")
        if frames and frames[-1].startswith(("select (selectors", "EpollSelector.select")):
            idle += samples
            continue
        counts[_where(frames)] += samples
    if not total:
        return Profile(0, 0.0, [])
    parts = [(name, n / total) for name, n in counts.most_common(top)]
    return Profile(total, idle / total, parts)
