"""Metric hooks, log context and secret masking, the shared rate budget and leader election."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime, timedelta

import pytest

from syncsvc.core import logs
from syncsvc.db.database import aconnect
from syncsvc.embed.profiles import get_profile
from syncsvc.observe import metrics
from syncsvc.observe.metrics import REGISTRY
from syncsvc.ops.coordination import BudgetStore, Coordinator, SharedRateLimiter, account_key
from tests.helpers import scalar, wait_for


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_api_hook_counts_codes_latency_and_429s() -> None:
    url = "https://user:pw@dashscope-intl.example.com/compatible-mode/v1?x=1"
    assert metrics.endpoint(url) == "dashscope-intl.example.com"
    host = "dashscope-intl.example.com"
    before = {
        "ok": _sample("syncsvc_api_requests_total", endpoint=host, code="200"),
        "429": _sample("syncsvc_api_rate_limited_total", endpoint=host),
        "err": _sample("syncsvc_api_errors_total", endpoint=host, code="timeout"),
        "lat": _sample("syncsvc_api_request_duration_seconds_count", endpoint=host),
    }
    metrics.record_api_reply(url, 200, 0.12)
    metrics.record_api_reply(url, 429, 0.01)
    metrics.record_api_reply(url, "timeout", None)
    assert _sample("syncsvc_api_requests_total", endpoint=host, code="200") == before["ok"] + 1
    assert _sample("syncsvc_api_rate_limited_total", endpoint=host) == before["429"] + 1
    assert _sample("syncsvc_api_errors_total", endpoint=host, code="timeout") == before["err"] + 1
    assert _sample("syncsvc_api_request_duration_seconds_count", endpoint=host) == before["lat"] + 2


def test_written_hook_tokens_cost_and_lag() -> None:
    price = metrics.price_per_million(get_profile("dashscope-intl"), "text-embedding-v4")
    assert price > 0
    assert metrics.price_per_million(get_profile("dashscope-intl"), "no-such-model") == 0.0
    now = datetime.now(UTC)
    metrics.record_written(
        "hooked",
        7,
        tokens=2_000_000,
        price_per_million=price,
        enqueued_at=[now - timedelta(seconds=3), now - timedelta(seconds=40), None],
    )
    assert _sample("syncsvc_embedding_tokens_total", target="hooked", generation="7") == 2e6
    assert _sample("syncsvc_embedding_cost_usd_total", target="hooked", generation="7") == (
        pytest.approx(2 * price)
    )
    assert _sample("syncsvc_commit_to_vector_lag_seconds_count", target="hooked") == 2
    assert _sample("syncsvc_commit_to_vector_lag_seconds_bucket", target="hooked", le="5.0") == 1


def test_log_lines_carry_context_and_never_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-very-secret-123")
    monkeypatch.setenv("SYNCSVC_DATABASE_URL", "postgresql://app:db-pass-987@db/app")
    secrets = logs.secret_values()
    assert "sk-very-secret-123" in secrets and "db-pass-987" in secrets
    record = logging.LogRecord("syncsvc.x", logging.WARNING, "", 0, "key %s", ("x",), None)

    def emit(fmt: logging.Formatter, message: str, *args: object, **extra: object) -> str:
        rec = logging.makeLogRecord(record.__dict__ | {"msg": message, "args": args} | extra)
        logs.ContextFilter().filter(rec)
        logs.SecretFilter(secrets).filter(rec)
        return fmt.format(rec)

    async def in_a_round() -> tuple[str, str]:
        logs.bind(target="articles", generation=3)
        text = emit(logs.TextFormatter("%(message)s"), "failed: %s", "sk-very-secret-123")
        data = emit(logs.JsonFormatter(), "row failed", request_id="req-1")
        return text, data

    text, data = asyncio.run(in_a_round())
    assert text == "failed: *** [target=articles generation=3]"
    payload = json.loads(data)
    assert payload["target"] == "articles" and payload["generation"] == 3
    assert payload["request_id"] == "req-1"
    # Bound fields stay in the task that bound them.
    outside = emit(logs.TextFormatter("%(message)s"), "db-pass-987 elsewhere")
    assert outside == "*** elsewhere"


def test_account_key_hides_the_key() -> None:
    key = account_key("https://api.example.com/v1", "sk-abcdef")
    assert key.startswith("api.example.com/") and "sk-abcdef" not in key
    assert account_key("https://api.example.com/v1", "sk-other") != key


async def test_shared_budget_spaces_requests_across_limiters(db_url: str) -> None:
    store = BudgetStore(db_url)
    try:
        # Two daemons' limiters on one account: 600 RPM → one slot per ~0.105 s together.
        limiters = [SharedRateLimiter(store, "acct", 600, None) for _ in range(2)]
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(limiters[i % 2].acquire(1) for i in range(8)))
        elapsed = loop.time() - started
        assert elapsed >= 7 * 60 / 600 * 0.9  # eight slots, seven gaps, whoever asked
        # A 429 seen by one pushes every daemon's next slot past the pause: the shared row's
        # next slot is the pause after the 429 was recorded (both by the database's clock).
        store.throttle_soon("acct", 1.0)
        async with await aconnect(db_url) as conn:
            budget = "SELECT {} FROM syncsvc.rate_budget WHERE account = 'acct'"
            await wait_for(lambda: scalar(conn, budget.format("throttled = 1")), timeout=30)
            pushed = await scalar(
                conn, budget.format("extract(epoch FROM request_tat - updated_at)::float8")
            )
            assert pushed >= 1.0 - 1e-6
        # However late this runs, its wait never reaches past that slot.
        assert 0.0 <= await store.reserve("acct", 600, None, 0.0, 0.0) <= 1.0
    finally:
        await store.aclose()


async def test_one_scheduler_and_failover(db_url: str) -> None:
    first, second = Coordinator(db_url, "a"), Coordinator(db_url, "b")
    try:
        assert await first.check_leadership()
        assert not await second.check_leadership()
        assert await first.check_leadership()  # holding, not re-taking
        swept: list[str] = []

        async def sweep(target_id: int | None = None) -> int:
            swept.append("x")
            return 1

        assert await second.gate(sweep)() == 0 and not swept
        await first.aclose()  # the leader dies: its session and lock go with it
        await wait_for(second.check_leadership, timeout=5)  # once the backend has exited
        assert await second.gate(sweep)() == 1 and swept == ["x"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_new_leader_sweeps_at_once(db_url: str) -> None:
    """The old leader may have died mid-sweep: whoever takes the scheduler over sweeps then,
    not at the next scheduled sweep minutes later."""
    from types import SimpleNamespace

    from syncsvc.db.database import create_pool

    first = Coordinator(db_url, "a", interval=0.1)
    second = Coordinator(db_url, "b", interval=0.1)
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open(wait=True)
    swept: list[int | None] = []

    async def sweep(target_id: int | None = None) -> int:
        swept.append(target_id)
        return 0

    daemon = SimpleNamespace(stop_event=asyncio.Event(), pool=pool, id="b", sweep=sweep)
    try:
        assert await first.check_leadership()
        service = asyncio.create_task(second.run(daemon))  # type: ignore[arg-type]
        await asyncio.sleep(0.5)
        assert swept == []  # not the leader: nothing to do
        await first.aclose()  # the leader dies
        await wait_for(lambda: _true(bool(swept)), timeout=10)
        assert swept == [None] and second.is_leader
        await asyncio.sleep(0.5)
        assert swept == [None]  # once per takeover, not on every heartbeat
        daemon.stop_event.set()
        await asyncio.wait_for(service, 5)
    finally:
        await first.aclose()
        await second.aclose()
        await pool.close()


async def _true(value: bool) -> bool:
    return value
