"""Stalled or not, and why: no progress for a while although work is pending.

A target or job with work waiting that made no progress over the last ``seconds`` (read from
the daemon's samples, ``syncsvc.observe.history``) is stalled, for the first reason that fits:

- ``paused``: an operator, schema drift or the job itself paused it (immediately, no wait);
- ``provider down``: a provider refusal paused the target, or every API request of the
  window failed;
- ``rate-limited``: the API answered 429, or the rate limiter runs below its budget;
- ``starved``: none of these, yet no rows of it were embedded (other work took the rounds,
  e.g. live edits or a sweep ahead of a re-embed's backfill).

Pure logic over samples: the admin page classifies, tests feed it made-up samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

from syncsvc.core.models import PROVIDER_PAUSE
from syncsvc.observe.history import Sample


@dataclass(frozen=True)
class Stall:
    kind: str
    """``paused``, ``provider down``, ``rate-limited`` or ``starved``."""
    reason: str = ""

    @property
    def label(self) -> str:
        return f"stalled: {self.kind}" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class Window:
    """What the samples of the last ``seconds`` say."""

    seconds: float
    targets_progressed: frozenset[str] = frozenset()
    """Targets with rows embedded, or whose backlog shrank, in the window."""
    targets_waiting: frozenset[str] = frozenset()
    """Targets with work pending and not paused in every database reading of the window, from
    one taken at its start: only these can be stalled (work that arrived, or a pause that
    ended, within the window has not waited long enough to say)."""
    targets_paused: frozenset[str] = frozenset()
    """Targets paused in any database reading of the window (their jobs are not judged)."""
    jobs_progressed: frozenset[int] = frozenset()
    jobs_waiting: frozenset[int] = frozenset()
    """Jobs pending or running in every database reading of the window, from its start."""
    api_requests: int = 0
    api_errors: int = 0
    rate_limited: int = 0
    limit_factor: float = 1.0
    target_rows: dict[str, int] = field(default_factory=dict)

    @property
    def anything_embedded(self) -> bool:
        return any(self.target_rows.values())


def window(samples: Sequence[Sample], seconds: float) -> Window | None:
    """The last ``seconds`` of ``samples`` (oldest first); None while they do not reach back
    that far (too early to call anything stalled)."""
    if not samples:
        return None
    end = samples[-1].at
    start = end - seconds
    if samples[0].at - samples[0].span > start:
        return None
    inside = [s for s in samples if s.at > start]
    rows: dict[str, int] = {}
    progressed: set[str] = set()
    for s in inside:
        for name, count in s.target_rows.items():
            rows[name] = rows.get(name, 0) + count
            if count > 0:
                progressed.add(name)
    # Database readings (a failed read is a gap, not a reading of nothing), from the newest
    # one covering the window's start: without one, nothing has been seen waiting throughout.
    readings = [s for s in samples if s.answered]
    first = next(
        (i for i in reversed(range(len(readings))) if readings[i].at - readings[i].span <= start),
        None,
    )
    span = readings[first:] if first is not None else []
    # Another daemon's work shows as a shrinking backlog.
    for older, newer in pairwise(span):
        for name, depth in newer.target_depth.items():
            if depth < older.target_depth.get(name, depth):
                progressed.add(name)
    waiting: set[str] = set()
    jobs_waiting: set[int] = set()
    jobs: set[int] = set()
    if span:
        waiting = {
            name
            for name in span[0].target_depth
            if all(s.target_depth.get(name, 0) > 0 and name not in s.paused_targets for s in span)
        }
        jobs_waiting = {job for job in span[0].job_done if all(job in s.job_done for s in span)}
        jobs = {job for job in jobs_waiting if span[-1].job_done[job] > span[0].job_done[job]}
    paused = {name for s in span for name in s.paused_targets}
    return Window(
        seconds=seconds,
        targets_progressed=frozenset(progressed),
        targets_waiting=frozenset(waiting),
        targets_paused=frozenset(paused),
        jobs_progressed=frozenset(jobs),
        jobs_waiting=frozenset(jobs_waiting),
        api_requests=sum(s.api_requests for s in inside),
        api_errors=sum(s.api_errors for s in inside),
        rate_limited=sum(s.rate_limited for s in inside),
        limit_factor=inside[-1].limit_factor if inside else 1.0,
        target_rows=rows,
    )


def _paused(reason: str) -> Stall:
    if reason.startswith(PROVIDER_PAUSE):
        return Stall("provider down", reason[len(PROVIDER_PAUSE) :])
    return Stall("paused", reason)


def _api_trouble(win: Window) -> Stall | None:
    succeeded = win.api_requests - win.api_errors - win.rate_limited
    if win.api_errors and succeeded <= 0:
        return Stall(
            "provider down",
            f"{win.api_errors} API requests failed in the last {win.seconds:.0f}s, none succeeded",
        )
    if win.rate_limited or win.limit_factor < 1.0:
        detail = f"{win.rate_limited} answers 429 in the last {win.seconds:.0f}s"
        if win.limit_factor < 1.0:
            detail += f"; sending at {win.limit_factor:.0%} of the budget"
        return Stall("rate-limited", detail)
    return None


def target_stall(
    target: str, waiting: int, paused_reason: str | None, win: Window | None
) -> Stall | None:
    """Whether ``target`` (``waiting`` rows pending or in flight) is stalled, and why."""
    if paused_reason:
        return _paused(paused_reason) if waiting else None
    if not waiting or win is None or target in win.targets_progressed:
        return None
    if target not in win.targets_waiting:
        return None
    if (trouble := _api_trouble(win)) is not None:
        return trouble
    if win.anything_embedded:
        return Stall("starved", "rounds went to other targets")
    return Stall("starved", f"nothing embedded for {win.seconds:.0f}s")


def job_stall(
    job: int,
    state: str,
    *,
    left: int | None,
    target: str,
    target_paused: str | None,
    win: Window | None,
) -> Stall | None:
    """Whether an unfinished job (``left`` rows to go; None: not counted yet) is stalled."""
    if state not in ("pending", "running", "paused") or left == 0:
        return None
    if state == "paused":
        return Stall("paused", "job paused")
    if target_paused:
        return _paused(f"target paused: {target_paused}")
    if win is None or job in win.jobs_progressed or job not in win.jobs_waiting:
        return None
    if target in win.targets_paused:
        return None
    if (trouble := _api_trouble(win)) is not None:
        return trouble
    if target in win.targets_progressed:
        return Stall("starved", "live edits and sweeps of its target go first")
    if win.anything_embedded:
        return Stall("starved", "rounds went to other work")
    return Stall("starved", f"nothing embedded for {win.seconds:.0f}s")
