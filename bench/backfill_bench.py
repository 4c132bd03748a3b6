"""Backfill throughput and edit-to-vector lag through the DashScope API simulator.

Runs the real daemon (registry-built DashScope compatible-mode provider, token-aware Embedder,
rate limiter) against ``syncsvc simulate-api`` in a separate process (so the simulator's CPU does
not share the daemon's GIL) at a given latency, requests in flight and optional RPM cap:

1. backfill N rows; report rows/s against the ceiling
   (in-flight × inputs per request ÷ latency, or the RPM cap × inputs per request when lower),
   requests per row, inputs per request, tokens per row and 429s;
2. with the daemon idle, edit rows at a steady rate and report commit-to-vector lag p50/p99.

Run: .venv/bin/python bench/backfill_bench.py            (the default matrix, ~3 minutes)
     .venv/bin/python bench/backfill_bench.py --rows 2000 --latency-ms 50 --concurrency 8
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import database_url, machine, write_section
from syncsvc import jobs, migrate, targets
from syncsvc.daemon import Daemon, DaemonTaskDied
from syncsvc.database import AsyncConn, aconnect
from syncsvc.embedder import Embedded, Embedder, EmbedInput, EmbedSpec
from syncsvc.providers.registry import build_provider
from syncsvc.runtime import tune_gc
from syncsvc.settings import ProviderSettings, Settings, WorkerSettings

KEY_ENV = "SYNCSVC_BENCH_API_KEY"
INPUTS_PER_REQUEST = 10
DIMS = 1024
VOCABULARY = (
    "vector search index postgres embedding model latency token batch queue worker daemon "
    "table column trigger backfill sweep region gateway sparse dense query document cosine "
    "distance quantized halfvec rerank chunk overlap throughput budget minute second retry"
)
WORDS = re.findall(r"\w+", VOCABULARY)


@dataclass(frozen=True)
class Run:
    rows: int
    latency_ms: float
    concurrency: int
    rpm: int | None
    edit_rate: float
    edit_seconds: float


@dataclass(frozen=True)
class Result:
    run: Run
    seconds: float
    rows_per_second: float
    ceiling: float
    requests: int
    inputs: int
    tokens: int
    rate_limited: int
    late_rate_limited: int
    max_in_flight: int
    lag_p50_ms: float
    lag_p99_ms: float
    edits: int
    load: float = 0.0
    """1-minute load average when the backfill finished: other work on the machine skews."""
    client_rows_per_second: float = 0.0
    """The same rows through the Embedder alone (no database): the client's own ceiling."""
    busy_lag_p50_ms: float = float("nan")
    busy_lag_p99_ms: float = float("nan")
    """Edit lag while a re-embedding job backfills a second generation of every row."""
    busy_job_done: float = float("nan")
    """Share of that job's rows done when the edits ended (below 1: the backfill was running)."""


def sim_providers(run: Run, sim_url: str) -> dict[str, ProviderSettings]:
    """The DashScope compatible-mode provider pointed at the simulator, as both phases use it."""
    return {
        "sim": ProviderSettings(
            profile="dashscope-intl",
            base_url=f"{sim_url}/compatible-mode/v1",
            api_key_env=KEY_ENV,
            concurrency=run.concurrency,
            rpm=run.rpm,
        )
    }


def ceiling(run: Run) -> float:
    by_latency = run.concurrency * INPUTS_PER_REQUEST / (run.latency_ms / 1000)
    if run.rpm is None:
        return by_latency
    return min(by_latency, run.rpm / 60 * INPUTS_PER_REQUEST)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def simulator(run: Run, key: str) -> Iterator[str]:
    port = free_port()
    command = [
        sys.executable, "-c", "from syncsvc.cli import main; main()", "--log-level", "WARNING",
        "simulate-api", "--port", str(port), "--latency-ms", str(run.latency_ms),
    ]  # fmt: skip
    if run.rpm:
        command += ["--rpm", str(run.rpm)]
    env = {**os.environ, "SYNCSVC_SIM_API_KEY": key}
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        with httpx.Client() as probe:
            while time.monotonic() < deadline:
                with contextlib.suppress(httpx.TransportError):
                    if probe.get(url + "/healthz").status_code == 200:
                        break
                time.sleep(0.1)
            else:
                raise RuntimeError("simulator did not start")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def text_for(rng: random.Random, i: int) -> tuple[str, str]:
    return f"item {i}", " ".join(rng.choice(WORDS) for _ in range(30))


async def count(conn: AsyncConn, query: str) -> Any:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


@contextlib.asynccontextmanager
async def daemon_running(settings: Settings, url: str) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings, url)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait(
        {task, asyncio.create_task(daemon.started.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if task.done():
        task.result()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        try:
            await asyncio.wait_for(task, 60)
        except DaemonTaskDied as died:
            # A task that ended cleanly because we asked it to stop is not a failure.
            if died.__cause__ is not None:
                raise


async def wait_until(conn: AsyncConn, query: str, goal: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await count(conn, query) < goal:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {query} to reach {goal}")
        await asyncio.sleep(0.05)


async def bench(run: Run, db_url: str) -> Result:
    key = secrets.token_hex(16)
    os.environ[KEY_ENV] = key
    rng = random.Random(7)
    with simulator(run, key) as sim_url:
        admin = httpx.AsyncClient(base_url=sim_url)
        settings = Settings(
            providers=sim_providers(run, sim_url),
            # The shipped defaults, but for a faster poll (the lag figures are about NOTIFY).
            worker=WorkerSettings(poll_interval_seconds=0.2),
        )
        conn = await aconnect(db_url)
        await conn.execute("DROP TABLE IF EXISTS items CASCADE")
        await conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, title text, body text)")
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO items VALUES (%s, %s, %s)",
                [(i, *text_for(rng, i)) for i in range(1, run.rows + 1)],
            )
        spec = targets.TargetSpec(
            name="items",
            table="items",
            columns=("title", "body"),
            model="text-embedding-v4",
            dimensions=DIMS,
            provider="sim",
        )
        await targets.add_target(conn, settings, spec)
        await admin.post("/_sim/reset")
        vectors = "SELECT count(*) FROM syncsvc.items_embeddings"
        started = time.monotonic()
        async with daemon_running(settings, db_url):
            await wait_until(conn, vectors, run.rows, timeout=600)
            seconds = time.monotonic() - started
            load = os.getloadavg()[0]
            backfill = (await admin.get("/_sim/stats")).json()
            span = await count(
                conn,
                "SELECT extract(epoch FROM max(embedded_at) - min(embedded_at)) "
                "FROM syncsvc.items_embeddings",
            )
            lags, edits = await edit_lag(conn, run, rng)
            busy_lags, busy_done = await lag_during_reembed(conn, settings, run, rng)
        await conn.close()
        await admin.aclose()
    return Result(
        run=run,
        seconds=seconds,
        rows_per_second=run.rows / float(span or seconds),
        ceiling=ceiling(run),
        requests=backfill["requests"],
        inputs=backfill["inputs"],
        tokens=backfill["tokens"],
        rate_limited=backfill["rate_limited"],
        late_rate_limited=backfill["rate_limited_late"],
        max_in_flight=backfill["max_in_flight"],
        lag_p50_ms=statistics.median(lags) * 1000 if lags else float("nan"),
        lag_p99_ms=statistics.quantiles(lags, n=100)[98] * 1000 if len(lags) > 1 else float("nan"),
        edits=edits,
        load=load,
        busy_lag_p50_ms=_percentile_ms(busy_lags, 50),
        busy_lag_p99_ms=_percentile_ms(busy_lags, 99),
        busy_job_done=busy_done,
    )


def _percentile_ms(values: list[float], q: int) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100)[q - 1] * 1000


async def lag_during_reembed(
    conn: AsyncConn, settings: Settings, run: Run, rng: random.Random
) -> tuple[list[float], float]:
    """Start a re-embedding job (a second generation of every row) and measure edit lag while
    it backfills: live edits jump the job's queue entries, so their lag should stay low."""
    job = await jobs.request_reembed(
        conn, settings, "items", model="text-embedding-v4", dimensions=DIMS // 2, provider="sim"
    )
    await wait_until(
        conn,
        f"SELECT count(*) FROM syncsvc.queue WHERE priority = {jobs.BACKFILL_PRIORITY}",
        1,
        timeout=60,
    )
    lags, _ = await edit_lag(conn, run, rng)
    building = f"SELECT count(*) FROM syncsvc.items_g{job.generation_id}"
    return lags, await count(conn, building) / run.rows


async def edit_lag(conn: AsyncConn, run: Run, rng: random.Random) -> tuple[list[float], int]:
    """Edit distinct rows at ``edit_rate``/s; lag = vector written - edit committed."""
    total = int(run.edit_rate * run.edit_seconds)
    ids = rng.sample(range(1, run.rows + 1), min(total, run.rows))
    committed: dict[int, float] = {}
    interval = 1.0 / run.edit_rate
    next_at = time.monotonic()
    for n, pk in enumerate(ids):
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        cur = await conn.execute(
            "UPDATE items SET body = body || %s WHERE id = %s "
            "RETURNING extract(epoch FROM clock_timestamp()) AS at",
            (f" edit{n}", pk),
        )
        row = await cur.fetchone()
        assert row is not None
        committed[pk] = float(row["at"])
        next_at += interval
    # Done when each edited row's vector is the embedding of its current text.
    query = (
        "SELECT count(*) FROM syncsvc.items_embeddings e JOIN items i USING (id) "
        "JOIN syncsvc.generations g ON g.id = e.generation_id "
        "WHERE e.id = ANY(%s) "
        "AND e.content_hash = syncsvc.content_hash(g.key, concat(i.title, E'\\n\\n', i.body))"
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        cur = await conn.execute(query, (list(committed),))
        row = await cur.fetchone()
        if row is not None and row["count"] >= len(committed):
            break
        await asyncio.sleep(0.05)
    cur = await conn.execute(
        "SELECT id, extract(epoch FROM embedded_at) AS at FROM syncsvc.items_embeddings "
        "WHERE id = ANY(%s)",
        (list(committed),),
    )
    lags = [float(r["at"]) - committed[r["id"]] for r in await cur.fetchall()]
    return [max(0.0, lag) for lag in lags], len(committed)


def fresh_database(base: str, name: str) -> str:
    """A new migrated database ``name`` next to ``base`` (one per run: targets are permanent)."""
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    prefix, _, query = base.partition("?")
    url = prefix.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrate.upgrade(url)
    return url


async def client_only(run: Run) -> float:
    """Rows/s of ``Embedder.embed`` alone against the same simulator settings."""
    key = secrets.token_hex(16)
    os.environ[KEY_ENV] = key
    rng = random.Random(7)
    items = [EmbedInput(i, "\n\n".join(text_for(rng, i))) for i in range(1, run.rows + 1)]
    with simulator(run, key) as sim_url:
        settings = Settings(providers=sim_providers(run, sim_url))
        provider = build_provider("sim", settings)
        embedder = Embedder(provider, EmbedSpec(model="text-embedding-v4", dimensions=DIMS))
        await embedder.embed(items[:80])  # warm the tokenizer and the connections
        started = time.monotonic()
        outcomes = await embedder.embed(items[80:])
        elapsed = time.monotonic() - started
        await provider.aclose()
    assert all(isinstance(o, Embedded) for o in outcomes.values())
    return (run.rows - 80) / elapsed


def report(results: list[Result]) -> str:
    lines = [
        f"{machine()}; embedded PostgreSQL + pgvector; simulator in its own process; "
        f"text-embedding-v4 at {DIMS} dims through the DashScope compatible-mode provider, "
        f"{INPUTS_PER_REQUEST} inputs per request. `python bench/backfill_bench.py`",
        "",
        "| rows | latency | in flight | RPM cap | rows/s | ceiling | % of ceiling | "
        "embedder alone | requests/row | inputs/request | tokens/row | 429s (after 1st s) | "
        "lag p50 | lag p99 | lag p50/p99 during a re-embed | load avg |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        run = r.run
        lines.append(
            f"| {run.rows:,} | {run.latency_ms:g} ms | {run.concurrency} | "
            f"{run.rpm or '—'} | {r.rows_per_second:,.0f} | {r.ceiling:,.0f} | "
            f"{100 * r.rows_per_second / r.ceiling:.0f}% | "
            f"{r.client_rows_per_second:,.0f} "
            f"({100 * r.client_rows_per_second / r.ceiling:.0f}%) | "
            f"{r.requests / run.rows:.3f} | "
            f"{r.inputs / max(1, r.requests - r.rate_limited):.2f} | "
            f"{r.tokens / run.rows:.1f} | {r.rate_limited} ({r.late_rate_limited}) | "
            f"{r.lag_p50_ms:,.0f} ms | {r.lag_p99_ms:,.0f} ms | "
            f"{r.busy_lag_p50_ms:,.0f} / {r.busy_lag_p99_ms:,.0f} ms "
            f"(job {100 * r.busy_job_done:.0f}% done) | {r.load:.1f} |"
        )
    lines += [
        "",
        "rows/s is the daemon's, measured over the span of `embedded_at` (first to last vector "
        "written); *embedder alone* sends the same rows through one `Embedder.embed` call without "
        "the database (all 2,000 requests queued at once, where the daemon feeds rounds of "
        "`claim_size` rows), a cross-check of the provider client's own throughput; "
        "lag is edit commit to vector commit for edits at the given rate on an idle daemon "
        f"({results[0].run.edit_rate:g} edits/s for {results[0].run.edit_seconds:g} s); "
        "*during a re-embed* repeats the edits while a re-embedding job backfills a second "
        "generation (half the dimensions) of every row, with the job's progress when the edits "
        "ended.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=float, action="append")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rpm", type=int, default=None, help="also run once under this cap")
    parser.add_argument("--edit-rate", type=float, default=50.0)
    parser.add_argument("--edit-seconds", type=float, default=10.0)
    parser.add_argument(
        "--database-url",
        default=None,
        help="a server to create scratch databases on (default: a fresh embedded server)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    runs = [
        Run(args.rows, latency, args.concurrency, None, args.edit_rate, args.edit_seconds)
        for latency in (args.latency_ms or [50.0, 200.0])
    ]
    if args.rpm or not args.latency_ms:
        rpm = args.rpm or 3000
        runs.append(Run(args.rows, 50.0, args.concurrency, rpm, args.edit_rate, args.edit_seconds))
    base = database_url(args.database_url)
    tune_gc()  # as `syncsvc run` does
    results = []
    for number, run in enumerate(runs):
        result = asyncio.run(bench(run, fresh_database(base, f"syncsvc_bench_{number}")))
        result = replace(result, client_rows_per_second=asyncio.run(client_only(run)))
        print(
            f"{run}: {result.rows_per_second:,.0f} rows/s of {result.ceiling:,.0f}, "
            f"embedder alone {result.client_rows_per_second:,.0f}, "
            f"{result.requests} requests, {result.rate_limited} 429s, "
            f"lag p50 {result.lag_p50_ms:.0f} ms p99 {result.lag_p99_ms:.0f} ms",
            flush=True,
        )
        results.append(result)
    body = report(results)
    print(body)
    if not args.no_write:
        write_section("Backfill through the API simulator", body)


if __name__ == "__main__":
    main()
