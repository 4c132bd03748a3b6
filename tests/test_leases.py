"""Leases under load: a live daemon's claims are its own, whatever its event loop does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import pytest

from syncsvc.daemon.leases import LeaseKeeper, LeaseKeeperDied
from syncsvc.db.database import create_pool
from syncsvc.queue.entries import Queue, RetryStrategy
from tests.helpers import fast_settings, queue_empty, running_daemon, scalar, text_targets, wait_for
from tests.test_races import BlockingProvider, PairedProvider

HELD = "SELECT worker FROM syncsvc.queue WHERE target_id = %s AND pk = %s::jsonb"


async def test_a_claim_committed_during_a_renewal_is_never_given_back(conn, db_url: str) -> None:
    """The orphan release gives back entries of rounds that ended; a claim that commits while a
    renewal runs (its round started after the renewal listed the rounds in progress) is not
    one of them, however the two interleave."""
    await text_targets(conn, rows=60)
    docs, notes = await scalar(conn, "SELECT array_agg(id ORDER BY id) FROM syncsvc.targets")
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, priority) "
        "SELECT t, jsonb_build_array(i), 1 FROM unnest(%s::int[]) t, generate_series(1, 60) i",
        ([docs, notes],),
    )
    pool = create_pool(db_url, max_size=4)
    await pool.open()
    try:
        queue = Queue(pool, "host:1:abc", lease_seconds=60, retry=RetryStrategy())
        for n in range(60):
            renewal = asyncio.create_task(queue.renew_leases())
            for _ in range(n % 4):  # let the renewal get this far before the claim starts
                await asyncio.sleep(0)
            (item,) = await queue.claim([docs], 1)
            await renewal
            assert await scalar(conn, HELD, (docs, str(item.pk))) == item.holder
            await queue.complete([item])
            queue.done(item.holder)
    finally:
        await pool.close()
    # The healthy neighbour's entries were never touched.
    pending = "SELECT count(*) FROM syncsvc.queue WHERE target_id = %s AND state = 'pending'"
    assert await scalar(conn, pending, (notes,)) == 60


async def test_a_live_daemons_claims_are_never_taken_over_however_late_its_lease(
    conn, db_url: str
) -> None:
    """A lapsed lease only says its holder is slow (a saturated machine): while its daemon has
    a session connected, its claims stay its own. A dead daemon's are taken at once."""
    await text_targets(conn, rows=3)
    docs, notes = await scalar(conn, "SELECT array_agg(id ORDER BY id) FROM syncsvc.targets")
    await conn.execute(
        "INSERT INTO syncsvc.queue (target_id, pk, state, worker, lease_until, updated_at) "
        "VALUES (%s, '[1]', 'in_flight', 'host:1:feedc0de/1', now() - interval '1 min', "
        "        now() - interval '2 min'), "
        "       (%s, '[1]', 'in_flight', 'host:2:deadbeef/1', now() - interval '1 min', "
        "        now() - interval '2 min')",
        (docs, notes),
    )
    alive = await psycopg.AsyncConnection.connect(db_url, application_name="syncsvc feedc0de")
    pool = create_pool(db_url)
    await pool.open()
    try:
        queue = Queue(pool, "someone:3:abc", lease_seconds=60, retry=RetryStrategy())
        assert await queue.expire_leases() == 1
        assert await scalar(conn, HELD, (docs, "[1]")) == "host:1:feedc0de/1"
        assert await scalar(conn, HELD, (notes, "[1]")) is None
    finally:
        await pool.close()
        await alive.close()

    # Its daemon gone (its backend exits just after the close returns), the slow holder's
    # claim is free too.
    async def freed() -> bool:
        return await queue_expire(db_url) == 1

    await wait_for(freed, timeout=30)
    assert await scalar(conn, HELD, (docs, "[1]")) is None


async def queue_expire(db_url: str) -> int:
    pool = create_pool(db_url)
    await pool.open()
    try:
        return await Queue(
            pool, "someone:4:abd", lease_seconds=60, retry=RetryStrategy()
        ).expire_leases()
    finally:
        await pool.close()


@pytest.mark.cpu_burner
async def test_leases_are_renewed_while_the_event_loop_is_stuck(conn, db_url: str) -> None:
    """A daemon whose event loop cannot run (a saturated machine, a long synchronous call)
    still renews the leases of its rounds in progress: the renewals do not wait for it."""
    await text_targets(conn, rows=20)
    slow = BlockingProvider("docs title")
    async with running_daemon(db_url, fast_settings(lease_seconds=6), provider=slow):
        await asyncio.wait_for(slow.entered.wait(), 30)
        lease = (
            "SELECT min(lease_until) FROM syncsvc.queue q JOIN syncsvc.targets t "
            "ON t.id = q.target_id WHERE t.name = 'docs' AND q.state = 'in_flight'"
        )
        first = await scalar(conn, lease)
        assert first is not None
        # Blocks this event loop, the daemon's too, until a renewal shows (or the deadline).
        renewed = _block_until_later(db_url, lease.replace("min(", "max("), first)
        assert renewed is not None and renewed > first
        slow.release.set()
        await wait_for(lambda: queue_empty(conn), timeout=60)
    counts = "SELECT count(*) FROM syncsvc.{}_embeddings"
    assert await scalar(conn, counts.format("docs")) == 20
    assert await scalar(conn, counts.format("notes")) == 20


def _block_until_later(db_url: str, query: str, than: object, timeout: float = 60) -> object:
    """Poll ``query`` without yielding to the event loop until it returns a value later than
    ``than`` (or the deadline passes); returns the last value."""
    value = None
    with psycopg.connect(db_url, autocommit=True) as sync:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = sync.execute(query).fetchone()
            value = row[0] if row else None
            if value is not None and value > than:
                break
            time.sleep(0.1)
    return value


class BrokenQueue(Queue):
    def renew_on(self, conn: psycopg.Connection[Any]) -> int:
        raise RuntimeError("a bug in the renewal")


async def test_a_lease_keeper_that_dies_says_so(db_url: str) -> None:
    """The keeper's thread is supervised like a task: a bug there stops the daemon loudly
    (its lease loop re-raises), it does not leave the claims unrenewed in silence."""
    pool = create_pool(db_url)
    keeper = LeaseKeeper(
        db_url,
        BrokenQueue(pool, "host:5:abe", lease_seconds=60, retry=RetryStrategy()),
        application_name="syncsvc abe",
        interval=0.1,
    )
    keeper.start()
    try:
        with pytest.raises(LeaseKeeperDied, match="a bug in the renewal"):
            for _ in range(600):
                keeper.check()
                await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(keeper.stop)
    assert not keeper.connected.is_set()


@pytest.mark.cpu_burner
async def test_two_daemons_with_short_leases_pay_for_each_row_once(conn, db_url: str) -> None:
    """Leases shorter than a round and renewals every 0.3 s, overlapping the claims of small
    rounds, on a saturated machine: each of 2 x 1,000 rows is paid for once all the same."""
    await text_targets(conn, rows=1000)
    one, two = PairedProvider(), PairedProvider()
    one.peer, two.peer = two, one
    settings = fast_settings(claim_size=20, lease_seconds=0.9)
    async with (
        running_daemon(db_url, settings, provider=one),
        running_daemon(db_url, settings, provider=two),
    ):
        await wait_for(lambda: queue_empty(conn), timeout=120)
    assert one.inputs > 0 and two.inputs > 0
    assert one.inputs + two.inputs == 2000
    counts = "SELECT count(*) FROM syncsvc.{}_embeddings"
    assert await scalar(conn, counts.format("docs")) == 1000
    assert await scalar(conn, counts.format("notes")) == 1000
