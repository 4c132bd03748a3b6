"""Re-embedding jobs at scale: two re-embeds under a live writer, then kill -9 halfway.

1. N rows on "v3" (local-hash, 1024 dims). A re-embed to "v4" 1024 dims (another vector space:
   a provider declared as space ``local-v4``) and then v4 1024 → 512 dims, each with
   ``--auto-promote``, while a writer keeps editing rows. After each promotion every live row
   must have exactly one vector in the new generation, equal to the embedding of its text.
2. A third re-embed run by a separate daemon process that is killed with SIGKILL at ~50%, then
   restarted: the job resumes from its cursor and embedding inputs stay within 1% of N.

Run: .venv/bin/python bench/reembed_bench.py            (20,000 rows, a few minutes)
     .venv/bin/python bench/reembed_bench.py --rows 5000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import database_url, machine, write_section
from syncsvc import jobs
from syncsvc.capture import targets
from syncsvc.core.settings import JobSettings, ProviderSettings, Settings, WorkerSettings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon.process import Daemon
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.embed import lexical
from syncsvc.jobs import JobState
from syncsvc.ops import migrate
from syncsvc.providers.local import LocalHashProvider

ROOT = Path(__file__).resolve().parent.parent
WORDS = ["vector", "search", "index", "postgres", "embedding", "model", "latency", "token"]


def settings() -> Settings:
    return Settings(
        worker=WorkerSettings(poll_interval_seconds=0.2, lease_seconds=10, claim_size=100),
        jobs=JobSettings(max_queued_rows=1000, poll_seconds=0.2, progress_seconds=0.5),
        providers={"local-v4": ProviderSettings(profile="local-hash", space="local-v4")},
    )


async def scalar(conn: AsyncConn, query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


async def until(check: Any, interval: float = 0.2) -> None:
    """Poll ``check()`` (a coroutine function) until it returns True."""
    # Polling the database: its state, not an in-process event, is what is waited for.
    while not await check():  # noqa: ASYNC110
        await asyncio.sleep(interval)


async def prepare(conn: AsyncConn, rows: int) -> None:
    rng = random.Random(1)
    await conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text)")
    async with conn.cursor() as cur, cur.copy("COPY docs FROM STDIN") as copy:
        for i in range(1, rows + 1):
            body = " ".join(rng.choice(WORDS) for _ in range(12))
            await copy.write_row((i, f"doc {i}", body))
    spec = targets.TargetSpec(
        name="docs", table="docs", columns=("title", "body"), model="local-hash", dimensions=1024
    )
    await targets.add_target(conn, settings(), spec)
    # "v3" is taken as current without embedding it: the benchmark is about the re-embeds.
    await conn.execute(
        "INSERT INTO syncsvc.docs_g1 (id, embedding, content_hash) "
        "SELECT d.id, array_fill(0.5, ARRAY[1024])::vector, "
        "syncsvc.content_hash(g.key, concat(d.title, E'\\n\\n', d.body)) "
        "FROM docs d, syncsvc.generations g WHERE g.id = 1"
    )


async def verify(conn: AsyncConn, dims: int) -> None:
    """Exactly one vector per live row in the active generation, equal to its text's."""
    cur = await conn.execute(
        "SELECT d.id, concat(d.title, E'\\n\\n', d.body) AS text, v.embedding "
        "FROM docs d FULL JOIN syncsvc.docs_embeddings v ON v.id = d.id"
    )
    rows = await cur.fetchall()
    for row in rows:
        assert row["text"] is not None and row["embedding"] is not None, row["id"]
        want = np.asarray(lexical.embed(row["text"], dims), dtype=np.float32)
        np.testing.assert_allclose(row["embedding"].to_numpy(), want, rtol=1e-6, atol=1e-7)
    count = await scalar(conn, "SELECT count(*) FROM docs")
    assert len(rows) == count, (len(rows), count)


async def live_reembeds(url: str, rows: int) -> list[str]:
    conf = settings()
    provider = LocalHashProvider()
    daemon = Daemon(conf, url, provider_factory=lambda name: provider)
    task = asyncio.create_task(daemon.run())
    await daemon.started.wait()
    stop = asyncio.Event()
    edits = 0

    async def writer() -> None:
        nonlocal edits
        rng = random.Random(2)
        async with await aconnect(url) as wconn:
            while not stop.is_set():
                await wconn.execute(
                    "UPDATE docs SET body = %s WHERE id = %s",
                    (f"edited {rng.random()}", rng.randint(1, rows)),
                )
                edits += 1
                await asyncio.sleep(0.01)

    lines = []
    async with await aconnect(url) as conn:
        for label, dims in (("v3 1024 → v4 1024", 1024), ("v4 1024 → v4 512", 512)):
            stop.clear()
            edits_before, inputs_before = edits, provider.inputs
            writing = asyncio.create_task(writer())
            started = time.monotonic()
            job = await jobs.request_reembed(
                conn,
                conf,
                "docs",
                model="local-hash",
                dimensions=dims,
                provider="local-v4",
                auto_promote=True,
            )
            while True:
                target = await get_target(conn, "docs")
                if target.active is not None and target.active.id == job.generation_id:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - started
            stop.set()
            await writing
            await until(
                lambda: scalar(
                    conn,
                    "SELECT NOT EXISTS (SELECT FROM syncsvc.queue) "
                    "AND NOT EXISTS (SELECT FROM syncsvc.inbox)",
                )
            )
            await verify(conn, dims)
            done = await jobs.get_job(conn, job.id)
            assert done.state is JobState.COMPLETED
            made = edits - edits_before
            lines.append(
                f"| {label} | {rows:,} | {elapsed:.1f} s | {rows / elapsed:,.0f} | {made:,} | "
                f"{provider.inputs - inputs_before:,} | {done.passes} | verified |"
            )
    daemon.request_stop()
    await task
    return lines


async def completed(conn: AsyncConn, job_id: int) -> bool:
    job = await jobs.get_job(conn, job_id)
    if job.state is JobState.FAILED:
        raise RuntimeError(f"job {job_id} failed: {job.error}")
    return job.state is JobState.COMPLETED


def spawn(url: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jobs_proc", url, str(log)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def crash_resume(url: str, rows: int) -> str:
    log = Path(tempfile.mkdtemp()) / "inputs.log"
    async with await aconnect(url) as conn:
        # The child daemon knows only the built-in provider: re-embed back into it.
        job = await jobs.request_reembed(
            conn, settings(), "docs", model="local-hash", dimensions=256, provider="local-hash"
        )
        table = f"syncsvc.docs_g{job.generation_id}"
        proc = spawn(url, log)
        half = f"SELECT count(*) >= {rows // 2} FROM {table}"

        async def halfway() -> bool:
            await completed(conn, job.id)  # raises if the job failed
            return bool(await scalar(conn, half))

        await until(halfway, 0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        at_kill = await scalar(conn, f"SELECT count(*) FROM {table}")
        proc = spawn(url, log)
        await until(lambda: completed(conn, job.id))
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        done = await jobs.get_job(conn, job.id)
    inputs = sum(int(x) for x in log.read_text().split())
    assert inputs <= rows * 1.01, (inputs, rows)
    return (
        f"kill -9 at {at_kill:,}/{rows:,} rows ({at_kill / rows:.0%}), restarted: "
        f"{inputs:,} embedding inputs for {rows:,} rows ({inputs / rows - 1:+.2%}), "
        f"{done.enqueued_rows:,} rows enqueued once each, {done.passes} rescans."
    )


async def run(url: str, rows: int) -> str:
    async with await aconnect(url) as conn:
        await prepare(conn, rows)
    lines = [
        f"{rows:,} rows, local-hash provider (no network), a writer editing rows throughout; "
        f"{machine()}. `python bench/reembed_bench.py`",
        "",
        "| re-embed | rows | until promoted | rows/s | edits meanwhile | inputs | rescans | "
        "vectors |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += await live_reembeds(url, rows)
    lines += ["", await crash_resume(url, rows)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--database-url", default=None, help="default: a fresh embedded server")
    parser.add_argument("--no-write", action="store_true", help="Do not update BENCHMARKS.md.")
    args = parser.parse_args()
    url = database_url(args.database_url)
    import psycopg

    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrate.upgrade(url)
    body = asyncio.run(run(url, args.rows))
    print(body)
    if not args.no_write:
        write_section("Re-embedding jobs", body)


if __name__ == "__main__":
    main()
