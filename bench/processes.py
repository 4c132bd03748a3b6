"""Processes the benchmarks run beside themselves: the API simulator, ``syncsvc run``, py-spy,
and the scratch databases they work on."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg

from syncsvc.ops import migrate


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def simulator_process(latency_ms: float, rpm: int | None, key: str) -> Iterator[tuple[str, int]]:
    """``syncsvc simulate-api`` in its own process: its URL and process id (for its CPU)."""
    port = free_port()
    command = [
        sys.executable, "-c", "from syncsvc.cli import main; main()", "--log-level", "WARNING",
        "simulate-api", "--port", str(port), "--latency-ms", str(latency_ms),
    ]  # fmt: skip
    if rpm:
        command += ["--rpm", str(rpm)]
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
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def daemon_process(
    env: dict[str, str], log: Path, *, wait_started: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    """``syncsvc run`` in its own process, yielded once it has started (its log says so, at
    INFO) or, without ``wait_started``, at once."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "syncsvc", "run"], env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + 60
        while wait_started and " started" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@contextlib.contextmanager
def profiled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy samples ``pid`` for the duration (idle frames too: what wakes while waiting)."""
    if out is None:
        yield
        return
    local = Path(sys.executable).with_name("py-spy")  # pip install py-spy (a bench-only tool)
    spy = subprocess.Popen(
        [str(local) if local.exists() else "py-spy", "record", "--pid", str(pid), "--idle",
         "--rate", "200", "--format", "raw", "--output", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.5)  # attached before the clock starts
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def fresh_database(base: str, name: str) -> str:
    """A new migrated database ``name`` next to ``base`` (one per run: targets are permanent)."""
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    prefix, _, query = base.partition("?")
    url = prefix.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrate.upgrade(url)
    return url


def restart_server(url: str, settings: dict[str, str]) -> None:
    """``ALTER SYSTEM SET`` each of ``settings`` on the bench's own embedded server, then
    ``pg_ctl restart`` it as the data directory's owner (``wal_level`` needs a restart)."""
    with psycopg.connect(url, autocommit=True) as conn:
        datadir = conn.execute("SHOW data_directory").fetchone()
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert datadir is not None and backend is not None
        with open(f"/proc/{backend[0]}/stat") as f:
            postmaster = int(f.read().rsplit(")", 1)[1].split()[1])
        for name, value in settings.items():
            conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
    pg_ctl = Path(os.readlink(f"/proc/{postmaster}/exe")).with_name("pg_ctl")
    owner = Path(str(datadir[0])).stat().st_uid
    subprocess.run(
        [str(pg_ctl), "restart", "-w", "-m", "fast", "-D", str(datadir[0])],
        user=owner,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
