"""kill -9 in the middle of a backfill: a restarted daemon finishes it, writing no row twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest

from syncsvc.simulator import SimulatorThread
from tests.helpers import spawn_daemon
from tests.simulator_fixtures import SIM_KEY_ENV

ROWS = 10_000


def _daemon(url: str) -> subprocess.Popen[bytes]:
    return spawn_daemon(url, lease_seconds=2, poll_interval_seconds=0.5, claim_size=50)


def _embedded(conn: psycopg.Connection[tuple[int]]) -> int:
    row = conn.execute("SELECT count(*) FROM syncsvc.docs_embeddings").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.cpu_burner
def test_kill_9_mid_backfill_then_restart(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO docs SELECT i, 'document number ' || i || ' about ' || (i %% 97) "
            "FROM generate_series(1, %s) i",
            (ROWS,),
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "syncsvc",
                "target",
                "add",
                "docs",
                "--table",
                "docs",
                "--columns",
                "body",
                "--dimensions",
                "64",
                "--provider",
                "local-hash",
            ],
            env={**os.environ, "SYNCSVC_DATABASE_URL": db_url},
            check=True,
            capture_output=True,
        )
        # Every write to the vector table is logged, so a second write of a row would show.
        conn.execute(
            "CREATE TABLE writes (id int); "
            "CREATE FUNCTION log_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO writes VALUES (NEW.id); RETURN NULL; END $$; "
            "CREATE TRIGGER log_write AFTER INSERT OR UPDATE ON syncsvc.docs_g1 "
            "FOR EACH ROW EXECUTE FUNCTION log_write()"
        )

        first = _daemon(db_url)
        deadline = time.monotonic() + 120
        while _embedded(conn) < ROWS // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        at_kill = _embedded(conn)
        assert 0 < at_kill < ROWS, "the kill must land mid-backfill"
        # The sweep queued every row up front, so the rest is still queued (some of it leased
        # by the dead daemon unless the kill fell between two rounds).
        (queued,) = conn.execute("SELECT count(*) FROM syncsvc.queue").fetchone() or (0,)
        assert queued >= ROWS - at_kill  # written-but-not-completed rows are still queued

        second = _daemon(db_url)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                (left,) = conn.execute("SELECT count(*) FROM syncsvc.queue").fetchone() or (0,)
                if left == 0 and _embedded(conn) == ROWS:
                    break
                time.sleep(0.2)
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(30) == 0
        assert _embedded(conn) == ROWS
        assert conn.execute("SELECT count(*), count(DISTINCT id) FROM writes").fetchone() == (
            ROWS,
            ROWS,
        )


@pytest.mark.cpu_burner
def test_a_kill_9_re_pays_at_most_the_requests_in_flight(
    db_url: str, simulator: SimulatorThread
) -> None:
    """Vectors are written as each request returns: a kill -9 loses (and a restart pays for
    again) at most the requests in flight, not the rounds in flight."""
    rows, concurrency = 4_000, 8
    simulator.configure(latency_ms=100)
    env = {
        "SYNCSVC_PROVIDERS__SIM__PROFILE": "dashscope-intl",
        "SYNCSVC_PROVIDERS__SIM__BASE_URL": simulator.compatible_base,
        "SYNCSVC_PROVIDERS__SIM__API_KEY_ENV": SIM_KEY_ENV,
        "SYNCSVC_PROVIDERS__SIM__CONCURRENCY": str(concurrency),
    }
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        conn.execute(
            "INSERT INTO docs SELECT i, 'document number ' || i FROM generate_series(1, %s) i",
            (rows,),
        )
        added = subprocess.run(
            [sys.executable, "-m", "syncsvc", "target", "add", "docs", "--table", "docs",
             "--columns", "body", "--provider", "sim", "--model", "text-embedding-v4",
             "--dimensions", "64"],
            env={**os.environ, **env, "SYNCSVC_DATABASE_URL": db_url},
            capture_output=True,
            text=True,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
        # Big rounds: writing once per round would lose up to rounds x 1,000 inputs per kill.
        # Leases long enough that a loaded machine never expires a live daemon's claims (a
        # dead one's are taken over at once: its sessions are gone).
        daemon = {"lease_seconds": 30, "poll_interval_seconds": 0.5, "claim_size": 1000}
        first = spawn_daemon(db_url, env=env, **daemon)
        deadline = time.monotonic() + 120
        # Killed by what the API served, not by what the database shows: mid-round.
        while simulator.stats()["inputs"] < rows * 0.35 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert 0 < _embedded(conn) < rows, "the kill must land mid-backfill"
        second = spawn_daemon(db_url, env=env, **daemon)
        try:
            deadline = time.monotonic() + 120
            while _embedded(conn) < rows and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            second.terminate()
            second.wait(30)
        assert _embedded(conn) == rows
    repaid = simulator.stats()["inputs"] - rows
    # The requests in flight at the kill (8 x 10 inputs: 2% of 4,000), plus at most as many
    # returned ones whose (grouped) write had not committed yet on a loaded machine.
    assert 0 <= repaid <= 2 * concurrency * 10, repaid
