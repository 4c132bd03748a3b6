"""PriorityGate: the most urgent waiter gets the next free slot; no slot is ever lost."""

from __future__ import annotations

import asyncio

import pytest

from syncsvc.embed.gate import PriorityGate


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_freed_slots_go_to_the_lowest_priority_number_then_first_come() -> None:
    gate = PriorityGate(1)
    await gate.acquire(5)
    order: list[str] = []

    async def wait(name: str, priority: int) -> None:
        await gate.acquire(priority)
        order.append(name)
        gate.release()

    tasks = []
    for name, priority in [("backfill-1", 2), ("sweep", 1), ("backfill-2", 2), ("edit-1", 0)]:
        tasks.append(asyncio.create_task(wait(name, priority)))
        await _settle()
    tasks.append(asyncio.create_task(wait("edit-2", 0)))
    await _settle()
    assert gate.waiting == 5
    gate.release()
    await asyncio.gather(*tasks)
    assert order == ["edit-1", "edit-2", "sweep", "backfill-1", "backfill-2"]
    assert (gate.in_use, gate.waiting) == (0, 0)


async def test_holders_never_exceed_the_slots() -> None:
    gate = PriorityGate(3)
    holding = peak = 0

    async def work(priority: int) -> None:
        nonlocal holding, peak
        async with gate.slot(priority):
            holding += 1
            peak = max(peak, holding)
            await asyncio.sleep(0.001)
            holding -= 1

    await asyncio.gather(*(work(i % 3) for i in range(40)))
    assert peak == 3
    assert gate.in_use == 0


async def test_a_cancelled_waiter_leaves_no_hole() -> None:
    gate = PriorityGate(1)
    await gate.acquire()
    cancelled = asyncio.create_task(gate.acquire(0))
    later = asyncio.create_task(gate.acquire(9))
    await _settle()
    cancelled.cancel()
    await _settle()
    assert gate.waiting == 1
    gate.release()
    await asyncio.wait_for(later, 1)
    assert (gate.in_use, gate.waiting) == (1, 0)
    gate.release()
    assert gate.in_use == 0


async def test_a_slot_handed_to_a_waiter_cancelled_at_that_moment_is_passed_on() -> None:
    gate = PriorityGate(1)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire(0))
    second = asyncio.create_task(gate.acquire(1))
    await _settle()
    gate.release()  # hands the slot to `first`, which has not run yet...
    first.cancel()  # ...and is cancelled before it does
    with pytest.raises(asyncio.CancelledError):
        await first
    await asyncio.wait_for(second, 1)
    assert (gate.in_use, gate.waiting) == (1, 0)


def test_a_gate_needs_a_slot() -> None:
    with pytest.raises(ValueError, match="at least one slot"):
        PriorityGate(0)


async def test_within_a_priority_tenants_take_turns() -> None:
    """Target A's 20 queued requests do not all go before target B's: B's first request waits
    for at most one of A's; with B gone, A's keep their first-come order."""
    gate = PriorityGate(1)
    await gate.acquire(0, "a")
    order: list[str] = []

    async def wait(name: str, priority: int, tenant: str) -> None:
        await gate.acquire(priority, tenant)
        order.append(name)
        gate.release()

    tasks = [asyncio.create_task(wait(f"a{i}", 0, "a")) for i in range(20)]
    await _settle()
    tasks += [asyncio.create_task(wait(f"b{i}", 0, "b")) for i in range(2)]
    tasks.append(asyncio.create_task(wait("backfill", 2, "c")))
    await _settle()
    gate.release()
    await asyncio.gather(*tasks)
    assert order[:4] == ["a0", "b0", "a1", "b1"]
    assert order[4:] == [f"a{i}" for i in range(2, 20)] + ["backfill"]
    # A tenant idle for a while gets no credit for it: its next request takes the next turn.
    await gate.acquire(0, "a")
    late = [asyncio.create_task(wait(n, 0, t)) for n, t in (("a-late", "a"), ("b-late", "b"))]
    await _settle()
    gate.release()
    await asyncio.gather(*late)
    assert order[-2:] == ["a-late", "b-late"]
