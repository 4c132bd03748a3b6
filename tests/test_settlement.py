"""When a claimed entry is completed during a re-embed (two generations per row, written by
separate transactions): never before both vectors are committed. Pure logic."""

from __future__ import annotations

from datetime import UTC, datetime

from syncsvc.core.models import ClaimedItem
from syncsvc.queue.entries import Failure
from syncsvc.queue.settlement import Settlement


def _item(pk: int) -> ClaimedItem:
    return ClaimedItem(
        target_id=1,
        pk=[pk],
        attempts=0,
        seq=1,
        holder="d",
        priority=1,
        enqueued_at=datetime.now(UTC),
    )


def _settlement(*keys: int) -> Settlement:
    return Settlement({(str(k),): _item(k) for k in keys}, {})


def test_the_only_write_a_row_waits_for_completes_it_in_its_own_transaction() -> None:
    s = _settlement(1)
    s.expect([("1",)])
    done = s.finishing([("1",)])
    assert [i.pk for i in done] == [[1]]
    assert s.settle([("1",)], done) == []  # already completed by that transaction
    assert s.completed == {("1",)}


def test_two_generations_finishing_at_once_complete_only_after_both_commit() -> None:
    """Active and building generation each owe row 1 a vector. Both writes start before
    either commits: neither may complete the row in its transaction (the other could still
    fail or be killed); the one that commits second completes it afterwards."""
    s = _settlement(1)
    s.expect([("1",)])  # active generation
    s.expect([("1",)])  # building generation
    active = s.finishing([("1",)])
    building = s.finishing([("1",)])
    assert active == [] and building == []
    assert s.settle([("1",)], active) == []  # the first commit: one vector still owed
    later = s.settle([("1",)], building)
    assert [i.pk for i in later] == [[1]] and s.completed == {("1",)}


def test_a_write_after_the_other_committed_completes_the_row_itself() -> None:
    s = _settlement(1)
    s.expect([("1",)])
    s.expect([("1",)])
    first = s.finishing([("1",)])
    assert s.settle([("1",)], first) == []
    second = s.finishing([("1",)])
    assert [i.pk for i in second] == [[1]]
    assert s.settle([("1",)], second) == []


def test_a_failed_row_is_never_completed() -> None:
    s = _settlement(1, 2)
    s.expect([("1",), ("2",)])
    s.expect([("1",)])
    s.failures[("1",)] = Failure(s.items[("1",)], "400 bad input", permanent=True)
    assert s.settle([("1",)], []) == []  # the failed outcome
    done = s.finishing([("1",), ("2",)])
    assert [i.pk for i in done] == [[2]]
    assert s.settle([("1",), ("2",)], done) == []
    assert s.completed == {("2",)}
