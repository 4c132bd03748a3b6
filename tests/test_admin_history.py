"""The admin page's picture of time, as pure logic: the daemon's ring buffer of samples, lag
quantiles from histogram buckets, the charts' geometry, and telling a stalled target or job
(and why) from a healthy neighbour. Made-up samples; no clock is read."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from syncsvc.observe import metrics
from syncsvc.observe.history import (
    Ring,
    Sample,
    StatsHistory,
    api_totals,
    bucket_delta,
    lag_buckets,
    quantile,
)
from syncsvc.observe.stalls import Stall, job_stall, target_stall, window
from syncsvc.web.charts import HEIGHT, WIDTH, chart, charts


def _samples(count: int, step: float = 10.0, **fields: Any) -> list[Sample]:
    """``count`` samples ``step`` seconds apart ending at t=1000; ``fields`` for every one."""
    base: dict[str, Any] = {"rows_per_second": 0.0}
    base.update(fields)
    # Each sample read the database (a None depth is a failed read).
    base.setdefault("queue_depth", sum(base.get("target_depth", {}).values()))
    return [Sample(at=1000 - step * (count - 1 - i), span=step, **base) for i in range(count)]


# --- the ring buffer ---------------------------------------------------------------------------


def test_ring_keeps_the_newest_items_in_order_and_a_fixed_size() -> None:
    ring: Ring[int] = Ring(3)
    assert ring.items() == () and len(ring) == 0
    for i in range(1, 8):
        ring.append(i)
    assert ring.items() == (5, 6, 7) and len(ring) == 3 and ring.capacity == 3
    copy = ring.items()
    ring.append(8)
    assert copy == (5, 6, 7)  # a copy, not a view
    assert list(ring) == [6, 7, 8]
    with pytest.raises(ValueError, match="at least one"):
        Ring[int](0)


def test_history_holds_one_window_of_samples() -> None:
    history = StatsHistory(interval=10.0, window=3600.0)
    for sample in _samples(500):
        history.record(sample)
    kept = history.get_stats()
    assert len(kept) == 360  # an hour at one sample per 10 s, however long it runs
    assert kept[-1].at == 1000 and kept[0].at == 1000 - 359 * 10
    with pytest.raises(ValueError, match="positive"):
        StatsHistory(interval=0)


def test_quantiles_interpolate_inside_buckets() -> None:
    assert quantile(0.5, []) is None
    assert quantile(0.5, [(1.0, 0.0), (math.inf, 0.0)]) is None
    # 10 rows under 1 s, 10 between 1 and 2 s: the median is at 1 s, p99 near 2 s.
    buckets = [(1.0, 10.0), (2.0, 20.0), (math.inf, 20.0)]
    assert quantile(0.5, buckets) == pytest.approx(1.0)
    assert quantile(0.99, buckets) == pytest.approx(1.98)
    assert quantile(0.25, buckets) == pytest.approx(0.5)
    # Beyond the last finite bucket, its bound is all that is known.
    assert quantile(0.99, [(1.0, 1.0), (math.inf, 10.0)]) == 1.0


def test_samples_read_the_process_counters_as_differences() -> None:
    """What the sampler reads of ``metrics``: API answers by kind, and the lag histogram."""
    before = api_totals()
    for code in (200, 200, 429, 503, "ConnectError"):
        metrics.record_api_reply("http://sim.test/v1", code, 0.01)
    after = api_totals()
    assert tuple(a - b for a, b in zip(after, before, strict=True)) == (5, 2, 1)
    lag_before = lag_buckets()
    stamp = datetime.now(UTC) - timedelta(seconds=45)
    metrics.record_written("history-test", 1, tokens=1, enqueued_at=[stamp] * 4)
    p50 = quantile(0.5, bucket_delta(lag_buckets(), lag_before))
    assert p50 is not None and 30 <= p50 <= 60  # the 30..60 s bucket, interpolated


# --- the charts ----------------------------------------------------------------------------------


def test_a_chart_spans_its_samples_and_scales_to_a_round_top() -> None:
    samples = [
        Sample(at=1000 + i, span=1.0, rows_per_second=float(v), queue_depth=None if i == 1 else 5)
        for i, v in enumerate((0, 40, 80, 20))
    ]
    rows = chart("rows", "rows", samples, [("rows/s", lambda s: s.rows_per_second)], str)
    (line,) = rows.lines
    points = [tuple(map(float, p.split(","))) for p in line.points.split()]
    assert line.count == 4 and rows.top == "100.0"
    assert points[0] == (0.0, HEIGHT) and points[-1][0] == WIDTH  # oldest left, newest right
    assert min(y for _, y in points) == pytest.approx(HEIGHT * (1 - 80 / 100))
    by_key = {c.key: c for c in charts(samples)}
    assert set(by_key) == {"rows", "lag", "queue", "api"}
    assert by_key["queue"].lines[0].count == 3  # a sample without the database is a gap
    assert by_key["lag"].empty and not by_key["rows"].empty
    assert charts([])[0].empty
    # A short sampling interval (tests) is thinned out to what the box can show.
    many = _samples(5000, step=0.5, rows_per_second=1.0)
    (thinned,) = charts(many)[0].lines
    assert 0 < thinned.count <= 2 * WIDTH
    assert thinned.points.split()[-1].startswith(f"{WIDTH:.1f},")  # the newest is kept


# --- stalled or not, and why -------------------------------------------------------------------


def test_too_few_samples_call_nothing_stalled() -> None:
    short = _samples(3, target_depth={"docs": 5})
    assert window(short, 60) is None
    assert window([], 60) is None
    assert target_stall("docs", 5, None, window(short, 60)) is None


def test_a_paused_target_is_stalled_at_once_with_its_reason() -> None:
    assert target_stall("docs", 5, "paused by an operator", None) == Stall(
        "paused", "paused by an operator"
    )
    refused = target_stall("docs", 5, "provider refused requests: invalid API key", None)
    assert refused == Stall("provider down", "invalid API key")
    assert refused.label == "stalled: provider down (invalid API key)"
    assert target_stall("docs", 0, "paused by an operator", None) is None  # nothing waits


def test_rate_limited_target_beside_a_healthy_one() -> None:
    samples = _samples(
        10,
        target_rows={"docs": 0, "notes": 3},
        target_depth={"docs": 50, "notes": 0},
        api_requests=10,
        rate_limited=4,
        limit_factor=0.5,
    )
    win = window(samples, 60)
    assert win is not None
    stalled = target_stall("docs", 50, None, win)
    assert stalled is not None and stalled.kind == "rate-limited"
    assert "24 answers 429" in stalled.reason and "50% of the budget" in stalled.reason
    assert target_stall("notes", 2, None, win) is None  # progressing: not stalled
    assert target_stall("notes", 0, None, win) is None  # idle: not stalled


def test_provider_down_when_every_request_fails() -> None:
    samples = _samples(10, target_depth={"docs": 7, "notes": 7}, api_requests=2, api_errors=2)
    win = window(samples, 60)
    stalled = target_stall("docs", 7, None, win)
    assert stalled is not None and stalled.kind == "provider down"
    assert "12 API requests failed" in stalled.reason
    # Some succeed: not down (and the one making progress is healthy).
    mixed = _samples(
        10,
        target_rows={"notes": 1},
        target_depth={"docs": 7, "notes": 7},
        api_requests=4,
        api_errors=1,
    )
    win = window(mixed, 60)
    assert target_stall("notes", 7, None, win) is None
    starved = target_stall("docs", 7, None, win)
    assert starved == Stall("starved", "rounds went to other targets")


def test_a_shrinking_backlog_is_progress_made_by_another_daemon() -> None:
    samples = [
        Sample(
            at=1000 + 10 * i,
            span=10,
            rows_per_second=0,
            queue_depth=100 - i,
            target_depth={"docs": 100 - i},
        )
        for i in range(10)
    ]
    win = window(samples, 60)
    assert win is not None and "docs" in win.targets_progressed
    assert target_stall("docs", 91, None, win) is None
    flat = _samples(10, target_depth={"docs": 100})
    assert target_stall("docs", 100, None, window(flat, 60)) == Stall(
        "starved", "nothing embedded for 60s"
    )


def test_a_job_starved_behind_its_targets_live_work_beside_a_healthy_job() -> None:
    samples = [
        Sample(
            at=1000 + 10 * i,
            span=10,
            rows_per_second=1,
            target_rows={"docs": 10, "notes": 5},
            queue_depth=520,
            target_depth={"docs": 500, "notes": 20},
            job_done={1: 40, 2: 100 + 10 * i},
            api_requests=3,
        )
        for i in range(10)
    ]
    win = window(samples, 60)
    starved = job_stall(1, "running", left=60, target="docs", target_paused=None, win=win)
    assert starved == Stall("starved", "live edits and sweeps of its target go first")
    assert job_stall(2, "running", left=10, target="notes", target_paused=None, win=win) is None
    # A job started within the window is not judged yet.
    young = [
        Sample(
            at=s.at,
            span=s.span,
            rows_per_second=1,
            queue_depth=0,
            job_done={3: 0} if s.at > 1050 else {},
        )
        for s in samples
    ]
    assert job_stall(3, "pending", left=None, target="docs", target_paused=None,
                     win=window(young, 60)) is None  # fmt: skip
    # Its target paused, or the job itself: stalled at once, whatever the samples say.
    blocked = job_stall(2, "running", left=10, target="notes", target_paused="drift", win=None)
    assert blocked == Stall("paused", "target paused: drift")
    assert job_stall(2, "paused", left=10, target="notes", target_paused=None, win=None) == Stall(
        "paused", "job paused"
    )
    # Finished, or nothing left: not stalled.
    assert job_stall(1, "completed", left=0, target="docs", target_paused=None, win=win) is None
    assert job_stall(1, "running", left=0, target="docs", target_paused=None, win=win) is None


def test_work_that_arrived_or_a_pause_that_ended_within_the_window_is_not_stalled_yet() -> None:
    """Stalled means waiting, unpaused, for the whole window: a bulk insert into an idle
    target, or a target resumed a moment ago, has not waited long enough to say."""
    arrived = [
        Sample(
            at=1000 + 10 * i,
            span=10,
            rows_per_second=0,
            queue_depth=0 if i < 6 else 500,
            target_depth={"docs": 0 if i < 6 else 500, "notes": 3},
        )
        for i in range(10)
    ]
    win = window(arrived, 60)
    assert win is not None and "docs" not in win.targets_waiting
    assert target_stall("docs", 500, None, win) is None
    # Its neighbour has waited the whole window without progress: stalled.
    assert target_stall("notes", 3, None, win) == Stall("starved", "nothing embedded for 60s")
    resumed = [
        Sample(
            at=1000 + 10 * i,
            span=10,
            rows_per_second=0,
            queue_depth=500,
            target_depth={"docs": 500},
            paused_targets=("docs",) if i < 8 else (),
        )
        for i in range(10)
    ]
    win = window(resumed, 60)
    assert win is not None and target_stall("docs", 500, None, win) is None
    # The same backlog, never paused in the window: stalled.
    steady = _samples(10, target_depth={"docs": 500})
    assert target_stall("docs", 500, None, window(steady, 60)) is not None


def test_a_failed_database_read_stalls_nothing() -> None:
    """A sample whose database read failed has no depths or job figures: a gap, not a reading
    of "nothing progressed" (every running job would be called stalled)."""
    samples = [
        Sample(
            at=1000 + 10 * i,
            span=10,
            rows_per_second=1,
            target_rows={"docs": 10},
            queue_depth=None if i == 9 else 500,
            target_depth={} if i == 9 else {"docs": 500},
            job_done={} if i == 9 else {1: 100 + 10 * i},
        )
        for i in range(10)
    ]
    win = window(samples, 60)
    assert win is not None and 1 in win.jobs_progressed
    assert job_stall(1, "running", left=50, target="docs", target_paused=None, win=win) is None
    # A job paused within the window (absent from a reading) is not judged on it either.
    paused = [
        Sample(
            at=s.at,
            span=s.span,
            rows_per_second=1,
            queue_depth=500,
            target_depth={"docs": 500},
            job_done={} if 3 <= i <= 5 else {2: 7},
        )
        for i, s in enumerate(samples)
    ]
    assert job_stall(2, "running", left=5, target="docs", target_paused=None,
                     win=window(paused, 60)) is None  # fmt: skip
    # Its target paused within the window: not judged.
    target_paused = [
        Sample(
            at=s.at,
            span=s.span,
            rows_per_second=1,
            queue_depth=500,
            target_depth={"docs": 500},
            job_done={2: 7},
            paused_targets=("docs",) if i == 4 else (),
        )
        for i, s in enumerate(samples)
    ]
    assert job_stall(2, "running", left=5, target="docs", target_paused=None,
                     win=window(target_paused, 60)) is None  # fmt: skip
    still = [replace(s, paused_targets=()) for s in target_paused]
    assert job_stall(2, "running", left=5, target="docs", target_paused=None,
                     win=window(still, 60)) is not None  # fmt: skip
