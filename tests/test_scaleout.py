"""Scale-out: three daemons, one database, one rate-capped API account.

Uncoordinated, each daemon paces itself to the account's RPM and together they overshoot it
threefold; with the shared budget in PostgreSQL they stay under the cap. Either way the queue's
SKIP LOCKED claims mean no row is embedded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from syncsvc.capture import targets
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon.process import Daemon, DaemonTaskDied
from syncsvc.ops import wiring as operations
from syncsvc.simulator import SimulatorThread
from tests.helpers import fast_settings, queue_empty, scalar, wait_for
from tests.simulator_fixtures import simulator_settings

RPM = 1200  # 20 requests per one-second window
ROWS = 120
DAEMONS = 3


def _settings(sim: SimulatorThread) -> Settings:
    providers = simulator_settings(sim, rpm=RPM, max_inputs_per_request=2).providers
    base = fast_settings(claim_size=8, rounds_in_flight=4)
    return base.model_copy(update={"providers": providers})


async def _table(conn: AsyncConn, name: str, settings: Settings) -> None:
    await conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")
    await conn.execute(
        f"INSERT INTO {name} SELECT i, 'document ' || i || ' of {name}' "
        "FROM generate_series(1, %s) i",
        (ROWS,),
    )
    spec = targets.TargetSpec(
        name=name,
        table=name,
        columns=("body",),
        model="text-embedding-v4",
        dimensions=64,
        provider="sim",
    )
    await targets.add_target(conn, settings, spec)


@contextlib.asynccontextmanager
async def _daemons(url: str, settings: Settings, *, coordinated: bool) -> AsyncIterator[None]:
    daemons = [Daemon(settings, url) for _ in range(DAEMONS)]
    if coordinated:
        for daemon in daemons:
            operations.install(daemon)
    tasks = [asyncio.create_task(d.run()) for d in daemons]
    try:
        yield
    finally:
        for daemon in daemons:
            daemon.request_stop()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, DaemonTaskDied) and outcome.__cause__ is None:
                continue  # a task that returned because it was told to stop
            if isinstance(outcome, BaseException):
                raise outcome


async def _vectors(conn: AsyncConn, name: str) -> int:
    return int(await scalar(conn, f"SELECT count(*) FROM syncsvc.{name}_embeddings"))


async def _done(conn: AsyncConn, name: str) -> bool:
    return await _vectors(conn, name) == ROWS and await queue_empty(conn)


@pytest.mark.cpu_burner
async def test_three_daemons_share_the_rate_budget(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    settings = _settings(simulator)
    simulator.configure(rpm=RPM, latency_ms=5)

    await _table(conn, "solo", settings)
    async with _daemons(db_url, settings, coordinated=False):
        await wait_for(lambda: _done(conn, "solo"), timeout=60)
    uncoordinated = simulator.stats()
    assert uncoordinated["inputs"] == ROWS  # no row embedded twice, even then
    assert await _vectors(conn, "solo") == ROWS

    simulator.reset()
    await _table(conn, "shared", settings)
    async with _daemons(db_url, settings, coordinated=True):
        await wait_for(lambda: _done(conn, "shared"), timeout=60)
    coordinated = simulator.stats()
    assert coordinated["inputs"] == ROWS, coordinated
    assert await _vectors(conn, "shared") == ROWS
    # Every daemon took part, through the one account budget row.
    workers = await scalar(conn, "SELECT count(*) FROM syncsvc.rate_budget")
    assert workers == 1
    reserved = await scalar(conn, "SELECT reserved FROM syncsvc.rate_budget")
    assert reserved >= ROWS / 2
    solo_429, shared_429 = uncoordinated["rate_limited"], coordinated["rate_limited"]
    print(f"429s: uncoordinated {solo_429}, shared budget {shared_429}")
    assert solo_429 >= 3
    # The shared budget spaces the daemons' requests evenly below the cap; on a saturated
    # machine a stalled event loop can still bunch a few into one of the simulator's fixed
    # one-second windows (seen: 3 against 8 uncoordinated), so the bound is on the share.
    assert shared_429 < solo_429
    assert coordinated["rate_limited"] <= 0.1 * coordinated["requests"]
