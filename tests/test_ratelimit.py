from __future__ import annotations

import asyncio
import time

import pytest

from syncsvc.ratelimit import CUT, SAFETY, RateLimiter, TokenBucket


def test_bucket_refills_at_rate_and_caps_at_capacity() -> None:
    bucket = TokenBucket(rate=10.0, capacity=2.0, now=0.0)
    assert bucket.delay(1, 0.0) == 0.0
    bucket.take(2, 0.0)
    assert bucket.delay(1, 0.0) == pytest.approx(0.1)
    assert bucket.delay(1, 0.05) == pytest.approx(0.05)
    # Long idle does not save up more than the capacity.
    assert bucket.delay(2, 100.0) == 0.0
    assert bucket.delay(3, 100.0) == 0.0  # larger than capacity: waits for a full bucket only


def test_bucket_debt_delays_the_next_caller() -> None:
    bucket = TokenBucket(rate=100.0, capacity=10.0, now=0.0)
    bucket.take(60, 0.0)  # one big request runs the bucket 50 into debt
    assert bucket.delay(1, 0.0) == pytest.approx(0.51)


async def test_limiter_paces_requests_per_second() -> None:
    limiter = RateLimiter(rpm=6000)  # 100/s, paced at 95/s
    started = time.monotonic()
    for _ in range(48):
        await limiter.acquire(1)
    elapsed = time.monotonic() - started
    # Capacity is 5 requests; the remaining 43 need 43/95 s.
    assert elapsed == pytest.approx(43 / (100 * SAFETY), abs=0.08)
    assert limiter.stats().requests == 48


async def test_limiter_paces_tokens() -> None:
    limiter = RateLimiter(tpm=60_000)  # 1000 tokens/s
    assert limiter.max_tokens_per_request == int(1000 * SAFETY)
    started = time.monotonic()
    for _ in range(4):
        await limiter.acquire(200)
    # Capacity 50: each request after the first waits for its 200 tokens at 950/s.
    assert time.monotonic() - started == pytest.approx(3 * 200 / 950, abs=0.1)
    assert limiter.stats().tokens == 800


async def test_429_pauses_everyone_and_cuts_the_rate_once_per_second() -> None:
    limiter = RateLimiter(rpm=60_000)
    assert limiter.on_rate_limited(0.3) == 0.3
    limiter.on_rate_limited(0.3)  # same second: no second cut
    assert limiter.stats().factor == pytest.approx(CUT)
    assert limiter.stats().rate_limited == 2
    started = time.monotonic()
    await limiter.acquire(1)
    assert time.monotonic() - started == pytest.approx(0.3, abs=0.05)
    for _ in range(10):
        limiter.on_success()
    assert limiter.stats().factor == pytest.approx(1.0)


async def test_without_a_configured_rpm_a_429_teaches_the_rate() -> None:
    limiter = RateLimiter(default_pause=0.0)
    for _ in range(20):
        await limiter.acquire(1)
    limiter.on_rate_limited(None)
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire(1)
    # Learned 20 * 0.8 = 16/s with a one-request bucket: 4 more requests need ~0.25 s.
    assert time.monotonic() - started == pytest.approx(4 / 16, abs=0.06)


async def test_concurrent_callers_are_served_in_order() -> None:
    limiter = RateLimiter(rpm=12_000)
    order: list[int] = []

    async def call(i: int) -> None:
        await limiter.acquire(1)
        order.append(i)

    await asyncio.gather(*(call(i) for i in range(30)))
    assert order == list(range(30))
