"""kill -9 in the middle of a backfill through the API simulator: what a restart pays again.

Each request's vectors are written, and its rows completed, as the request returns, so a
``kill -9`` should lose (and a restarted daemon pay for again) at most the requests in
flight: concurrency × inputs per request. For each kill: a fresh database and table of N
rows, ``syncsvc run`` in its own process, the target added while it idles, ``SIGKILL`` once
the given share of the rows has left the queue, a second daemon started at once to finish.
The simulator counts every input it embedded; inputs beyond N were paid twice.

Run: .venv/bin/python bench/kill_bench.py                  (20,000 rows at 50 ms, 3 kills)
     .venv/bin/python bench/kill_bench.py --rows 4000 --kills 1 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backfill_bench import (
    DIMS,
    DRAINED,
    INPUTS_PER_REQUEST,
    KEY_ENV,
    VECTORS,
    Run,
    daemon_env,
    items_table,
    sim_providers,
)
from bench.processes import daemon_process, fresh_database, simulator_process
from bench.report import (
    add_common_arguments,
    count,
    database_url,
    machine,
    wait_until,
    write_section,
)
from syncsvc.capture import targets
from syncsvc.core.settings import Settings
from syncsvc.db.database import aconnect

HEADING = "kill -9 during a backfill"
GOAL = 0.01
"""Inputs paid again per kill, as a share of the backfill's rows."""


@dataclass(frozen=True)
class Kill:
    rows: int
    at: int
    """Rows with a vector when the daemon was killed."""
    inputs: int
    """Inputs the simulator embedded in all (both daemons)."""
    bound: int
    """Inputs in flight at most: requests in flight × inputs per request."""

    @property
    def repaid(self) -> int:
        return self.inputs - self.rows


async def kill_once(run: Run, db_url: str, sim_url: str, share: float) -> Kill:
    env = daemon_env(run, sim_url, db_url)
    settings = Settings(providers=sim_providers(run, sim_url))
    conn = await aconnect(db_url)
    try:
        spec = await items_table(conn, run)
        goal = int(run.rows * share)
        with tempfile.TemporaryDirectory() as scratch:
            async with httpx.AsyncClient(base_url=sim_url) as admin:
                await admin.post("/_sim/reset")
                with daemon_process(env, Path(scratch) / "first.log") as first:
                    await targets.add_target(conn, settings, spec)
                    await wait_until(conn, VECTORS, goal, timeout=600, process=first)
                    first.send_signal(signal.SIGKILL)
                    first.wait(10)
                at = int(await count(conn, VECTORS))
                with daemon_process(env, Path(scratch) / "second.log") as second:
                    await wait_until(conn, DRAINED, run.rows, timeout=600, process=second)
                stats = (await admin.get("/_sim/stats")).json()
    finally:
        await conn.close()
    return Kill(run.rows, at, int(stats["inputs"]), run.concurrency * INPUTS_PER_REQUEST)


def report(kills: list[Kill], run: Run) -> str:
    lines = [
        f"{machine()}; embedded PostgreSQL + pgvector; `syncsvc run` (shipped settings) and the "
        f"simulator each in a process of their own; {run.rows:,} rows, text-embedding-v4 at "
        f"{DIMS} dims, {run.latency_ms:g} ms latency, {run.concurrency} requests in flight of "
        f"{INPUTS_PER_REQUEST} inputs. `python bench/kill_bench.py`",
        "",
        "| kill | rows with a vector at the kill | inputs embedded in all | paid again | "
        "share of the rows | requests in flight | goal |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for number, k in enumerate(kills, 1):
        share = k.repaid / k.rows
        lines.append(
            f"| {number} | {k.at:,} ({100 * k.at / k.rows:.0f}%) | {k.inputs:,} | {k.repaid:,} | "
            f"{100 * share:.2f}% | {k.bound} ({100 * k.bound / k.rows:.2f}%) | "
            f"≤ {100 * GOAL:g}% {'met' if share <= GOAL else '**not met**'} |"
        )
    lines += [
        "",
        "What a kill loses is the requests in flight and the replies that returned while a "
        "write was running or lingering (a backfill's replies wait up to "
        "`worker.write_linger_seconds`, 0.1 s, or 40 rows to share a write: 0.40-0.50% per "
        "kill before that, 2026-12-03), each paid again after the restart. The restarted "
        "daemon takes the dead one's leased rows over once its sessions "
        "are gone "
        "(a few seconds, not the lease); rows whose vectors were written before the kill are "
        "completed with them in one transaction, so none is embedded again.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kills", type=int, default=3, help="one fresh backfill per kill")
    add_common_arguments(parser)
    args = parser.parse_args()
    run = Run(args.rows, args.latency_ms, args.concurrency, None, 0.0, 0.0)
    base = database_url(args.database_url)
    key = secrets.token_hex(16)
    os.environ[KEY_ENV] = key
    kills = []
    with simulator_process(run.latency_ms, run.rpm, key) as (sim_url, _):
        for number in range(args.kills):
            # Spread the kills over the backfill: a quarter, half and three quarters done.
            share = (number + 1) / (args.kills + 1)
            db_url = fresh_database(base, f"syncsvc_kill_{number}")
            kill = asyncio.run(kill_once(run, db_url, sim_url, share))
            print(
                f"kill {number + 1} at {kill.at:,}/{kill.rows:,} rows: {kill.inputs:,} inputs, "
                f"{kill.repaid:,} paid again ({100 * kill.repaid / kill.rows:.2f}%)",
                flush=True,
            )
            kills.append(kill)
    body = report(kills, run)
    print(body)
    if not args.no_write:
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
