from __future__ import annotations

import asyncio

import pytest

from syncsvc.embed.ratelimit import BURST, CUT, SAFETY, WIDEN, WINDOW, RateLimiter, SlidingWindow


class VirtualClock:
    """Time that passes only when the limiter sleeps: pacing is asserted exactly, whatever the
    machine's load (real-time pacing is what the simulator tests count 429s for)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def limiter(**kw: object) -> tuple[RateLimiter, VirtualClock]:
    clock = VirtualClock()
    return RateLimiter(clock=clock, sleep=clock.sleep, **kw), clock  # type: ignore[arg-type]


def test_window_bounds_every_interval_of_a_second() -> None:
    window = SlidingWindow(limit=10.0, window=1.0)
    assert window.delay(4, 0.0) == 0.0
    window.take(4, 0.0)
    window.take(4, 0.3)
    assert window.delay(2, 0.5) == 0.0
    # 8 spent: 3 more fit once the first 4 expire at t=1.0.
    assert window.delay(3, 0.5) == pytest.approx(0.5)
    # 7 more need both entries gone: t=1.3.
    assert window.delay(7, 0.5) == pytest.approx(0.8)
    assert window.spent(1.0) == 4


def test_window_admits_an_oversized_amount_only_when_empty() -> None:
    window = SlidingWindow(limit=10.0, window=1.0)
    window.take(1, 0.0)
    assert window.delay(50, 0.2) == pytest.approx(0.8)
    assert window.delay(50, 1.0) == 0.0


def test_large_requests_never_share_a_fixed_server_window() -> None:
    """The failure a token bucket has: two 800-token requests inside one 1,000-token second."""
    window = SlidingWindow(limit=950.0)
    now, sent = 0.05, []
    for _ in range(4):
        now += window.delay(800, now)
        window.take(800, now)
        sent.append(now)
    for second in range(5):
        assert sum(800 for t in sent if second <= t < second + 1) <= 1000


async def test_limiter_spaces_requests_evenly_within_the_budget() -> None:
    paced, clock = limiter(rpm=1200)  # 20/s, 19.4 used per window: one every 53.6 ms
    spacing = WINDOW / (20 * SAFETY)
    sent = []
    for _ in range(25):
        await paced.acquire(1)
        sent.append(clock())
    # A short burst (BURST + 1 back to back), then one request per spacing interval.
    assert sent[BURST] == sent[0]
    assert sent[BURST + 1] - sent[0] == pytest.approx(spacing)
    # The sliding window (the burst still in it) holds a few back: within one more interval.
    assert (24 - BURST) * spacing <= sent[-1] - sent[BURST] <= (25 - BURST) * spacing
    # Never more than the budget in any one-second interval.
    assert max(sum(1 for t in sent if s <= t < s + 1.0) for s in sent) <= 19
    assert paced.stats().requests == 25


async def test_limiter_paces_tokens() -> None:
    paced, clock = limiter(tpm=60_000)  # 1,000 tokens/s, 970 used
    assert paced.max_tokens_per_request == int(1000 * SAFETY)
    started = clock()
    sent = []
    for _ in range(5):
        await paced.acquire(400)
        sent.append(clock() - started)
    # Two requests of 400 fit a window, the third waits for the next: t = 0, 0, W, W, 2W.
    assert sent == pytest.approx([0, 0, WINDOW, WINDOW, 2 * WINDOW])
    assert paced.stats().tokens == 2000


async def test_429_pauses_everyone_and_cuts_the_rate_once_per_second() -> None:
    paced, clock = limiter(rpm=60_000)
    assert paced.on_rate_limited(0.3) == 0.3
    paced.on_rate_limited(0.3)  # same second: no second cut
    assert paced.stats().factor == pytest.approx(CUT)
    assert paced.stats().rate_limited == 2
    # Our pacing already honours the budget, so the 429 means jitter: widen the margin.
    assert paced.stats().window_seconds == pytest.approx(WINDOW + WIDEN)
    started = clock()
    await paced.acquire(1)
    assert clock() - started == pytest.approx(0.3)
    for _ in range(10):
        paced.on_success()
    assert paced.stats().factor == pytest.approx(1.0)


async def test_without_a_configured_rpm_a_429_teaches_the_rate() -> None:
    paced, clock = limiter(default_pause=0.0)
    for _ in range(20):
        await paced.acquire(1)
    paced.on_rate_limited(None)
    # Learned 20 * 0.8 = 16 per second, and 20 were sent within the last second (all at once
    # on this clock): the next one waits for them to leave the window.
    started = clock()
    await paced.acquire(1)
    assert clock() - started == pytest.approx(WINDOW)


async def test_concurrent_callers_are_served_in_order() -> None:
    limiter = RateLimiter(rpm=1200)
    order: list[int] = []

    async def call(i: int) -> None:
        await limiter.acquire(1)
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(30)))
    assert order == list(range(30))


async def test_under_a_cap_a_live_request_takes_the_next_turn() -> None:
    limiter = RateLimiter(rpm=600)  # 9.7 per window: nine requests fill it
    for _ in range(9):
        await limiter.acquire(1, priority=2)
    order: list[str] = []

    async def take(name: str, priority: int) -> None:
        await limiter.acquire(1, priority)
        order.append(name)

    waiting = [asyncio.create_task(take(f"backfill-{i}", 2)) for i in range(3)]
    await asyncio.sleep(0.05)  # backfill-0 holds the turn, waiting for the window to clear
    waiting.append(asyncio.create_task(take("edit", 0)))
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert order == ["backfill-0", "edit", "backfill-1", "backfill-2"]
