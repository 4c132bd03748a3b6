"""kill -9 of the daemon halfway through a job: it resumes from its cursor, redoing ~nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from syncsvc import jobs
from syncsvc.core.types import AsyncConn
from syncsvc.jobs import JobState
from tests.helpers import wait_for
from tests.jobs_support import (
    assert_generation_matches_source,
    job_settings,
    make_docs,
    vector_count,
)

ROWS = 5000


def _spawn(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.jobs_proc", db_url, str(log)],
        cwd=Path(__file__).resolve().parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _inputs(log: Path) -> int:
    return sum(int(line) for line in log.read_text().split()) if log.exists() else 0


@pytest.mark.cpu_burner
async def test_kill_9_halfway_then_resume(conn: AsyncConn, db_url: str, tmp_path: Path) -> None:
    await make_docs(conn, ROWS)
    # The active generation is taken as current (hashes match), so the daemon's only work is
    # the job; its vectors' values do not matter to this test.
    await conn.execute(
        "INSERT INTO syncsvc.docs_g1 (id, embedding, content_hash) "
        "SELECT d.id, array_fill(0.5, ARRAY[256])::vector, "
        "syncsvc.content_hash(g.key, concat(d.title, E'\\n\\n', d.body)) "
        "FROM docs d, syncsvc.generations g WHERE g.id = 1"
    )
    job = await jobs.request_reembed(
        conn, job_settings(), "docs", model="local-hash", dimensions=128
    )
    table = f"docs_g{job.generation_id}"
    log = tmp_path / "inputs.log"
    proc = _spawn(db_url, log)
    try:
        await wait_for(lambda: _at_least(conn, table, ROWS // 2), timeout=60, interval=0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at = await vector_count(conn, table)
    assert killed_at < ROWS * 0.8, "the job ran too fast to be killed halfway"
    interrupted = await jobs.get_job(conn, job.id)
    assert interrupted.state is JobState.RUNNING and interrupted.cursor is not None
    # Whether rounds were in flight at the kill depends on timing (the job feeds the queue in
    # bounded ticks); the cursor and the remaining rows are what resumption must handle.

    proc = _spawn(db_url, log)
    try:
        await wait_for(lambda: _completed(conn, job.id), timeout=90)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0, err.decode()[-2000:]
    done = await jobs.get_job(conn, job.id)
    assert done.passes == 0  # no rescan was needed: the cursor and the queue had it all
    assert done.enqueued_rows == ROWS  # each row was enqueued once, before or after the kill
    inputs = _inputs(log)
    assert ROWS <= inputs <= ROWS * 1.01, f"{inputs} embedding inputs for {ROWS} rows"
    await assert_generation_matches_source(conn, table, 128)


async def _at_least(conn: AsyncConn, table: str, n: int) -> bool:
    return await vector_count(conn, table) >= n


async def _completed(conn: AsyncConn, job_id: int) -> bool:
    return (await jobs.get_job(conn, job_id)).state is JobState.COMPLETED
