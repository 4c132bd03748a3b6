"""Where a profiled process spent its time: py-spy's raw (collapsed) stacks, summarised.

``py-spy record --idle --format raw`` writes one line per distinct stack, ``frame;frame;... N``
with N samples. Idle samples end in the event loop's ``select``: their share is the time
the daemon waited on sockets and timers; the rest is split by the first syncsvc frame of each
stack, the part of the pipeline that was running. Only the event loop's thread counts: the
lease keeper's thread sleeps between renewals.
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
        if "LeaseKeeper._run" in stack:
            # The lease keeper's own thread, asleep between renewals: not the pipeline.
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


STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # A stack counts for the first stage one of whose markers appears in it: innermost work
    # (decoding inside HTTP, the write inside a round) before what encloses it.
    ("start-up (imports, settings, migrations check)", ("_find_and_load", "ensure_schema")),
    ("decode (JSON of the reply)", ("_json (", "decode_vector", "_parse (")),
    ("validate (vectors)", ("validate (",)),
    ("write (vectors: pack, send)", ("write_vectors", "PackedVector")),
    ("complete (queue entries)", ("Queue.complete",)),
    ("HTTP (request, transport)", ("HttpClient", "LeanTransport", "httpx/")),
    ("tokenize / pack inputs", ("Embedder.plan", "Embedder.pack", "tokens.py", "_shares")),
    ("read text (source rows)", ("read_rows",)),
    ("claim (inbox, leases, targets, claim)", (
        "Queue.claim", "expand_inbox", "expire_leases", "load_targets", "_claim_rounds",
    )),
    ("write transaction (pool, BEGIN/COMMIT)", ("Worker._embed_generation.<locals>.store",)),
    ("other syncsvc", ("/syncsvc/",)),
)  # fmt: skip


def stages(path: Path) -> tuple[int, list[tuple[str, float]]]:
    """Busy samples (not waiting in select, main thread) by pipeline stage, as shares of the
    busy samples: where the daemon's CPU goes, roughly (a sample of a runnable thread that the
    kernel has not scheduled counts as busy too)."""
    counts: Counter[str] = Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit() or "LeaseKeeper" in stack:
            continue
        frames = stack.split(";")
        if frames and frames[-1].startswith(("select (selectors", "EpollSelector.select")):
            continue
        samples = int(number)
        busy += samples
        stack = "/" + stack
        for name, markers in STAGES:
            if any(marker in stack for marker in markers):
                counts[name] += samples
                break
        else:
            counts["outside syncsvc (event loop, psycopg, GC)"] += samples
    if not busy:
        return 0, []
    return busy, [(name, n / busy) for name, n in counts.most_common()]
