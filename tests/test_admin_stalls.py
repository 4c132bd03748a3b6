"""Issue 25, item 1: a stalled target on the admin page says why, and its healthy neighbour
is not marked. Real daemon, real PostgreSQL, the simulator over HTTP answering 429 on one
route only (one target's provider); the daemon samples every few hundredths of a second."""

from __future__ import annotations

import re

import httpx

from syncsvc.capture import targets
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.simulator import FaultKind, FaultRule, SimulatorThread
from tests.helpers import scalar, wait_for
from tests.ops_support import web_daemon, web_settings
from tests.simulator_fixtures import simulator_settings

PENDING = (
    "SELECT count(*) FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id "
    "WHERE t.name = %s AND q.state <> 'failed'"
)


async def _add(conn: AsyncConn, settings: Settings, name: str, provider: str) -> None:
    await conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text)")
    await conn.execute(
        f"INSERT INTO {name} SELECT i, '{name} row ' || i FROM generate_series(1, 5) i"
    )
    spec = targets.TargetSpec(
        name=name,
        table=name,
        columns=("body",),
        model="text-embedding-v4",
        dimensions=64,
        provider=provider,
    )
    await targets.add_target(conn, settings, spec)


def _row(page: str, target: str) -> str:
    found = re.search(rf'<tr data-target="{target}"[^>]*>.*?</tr>', page, re.DOTALL)
    assert found is not None, target
    return found.group(0)


async def test_a_rate_limited_target_is_stalled_and_says_so_its_neighbour_is_not(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    # The native route answers 429 (retry after 0.5 s) to every request; the compatible
    # route, the healthy target's, is untouched.
    simulator.set_faults(FaultRule(FaultKind.RATE_LIMIT, retry_after=0.5, route="native"))
    providers = {
        **simulator_settings(simulator, "dashscope-intl", name="healthy").providers,
        **simulator_settings(simulator, "dashscope-intl-native", name="limited").providers,
    }
    settings = web_settings(admin_sample_seconds=0.05, admin_stall_seconds=2).model_copy(
        update={"providers": providers}
    )
    await _add(conn, settings, "fine", "healthy")
    await _add(conn, settings, "slow", "limited")
    async with (
        web_daemon(db_url, settings=settings, configured_providers=True) as (_, web),
        httpx.AsyncClient(base_url=web.url) as client,
    ):

        async def stalled() -> bool:
            page = (await client.get("/admin?refresh=0")).text
            idle = 'data-state="idle"' in _row(page, "fine")
            return idle and 'data-stall="rate-limited"' in _row(page, "slow")

        await wait_for(stalled, timeout=60)
        page = (await client.get("/admin?refresh=0")).text
        slow, fine = _row(page, "slow"), _row(page, "fine")
        assert "stalled: rate-limited (" in slow and "answers 429" in slow
        assert await scalar(conn, PENDING, ("slow",)) == 5  # still waiting, none lost
        # The healthy neighbour embedded everything and is not marked.
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.fine_embeddings") == 5
        assert "data-stall" not in fine and 'data-state="idle"' in fine
        samples = (await client.get("/admin/stats")).json()["samples"]
        assert sum(s["rate_limited"] for s in samples) > 0
        assert sum(s["target_rows"].get("slow", 0) for s in samples) == 0
