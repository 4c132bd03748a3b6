"""Memory flat: the daemon's resident set while it drains a large backlog.

For each size: a table of N rows filled by one ``INSERT ... SELECT generate_series``, a target
on it with the offline ``local-hash`` provider (so the figure is the daemon's, not a network
client's), then ``syncsvc run`` in a process of its own against the embedded PostgreSQL. Every
second the bench reads the daemon's ``VmRSS`` from ``/proc/<pid>/status`` and counts the
target's vectors, until every row has one. Reported: peak RSS (the kernel's ``VmHWM``, which
also catches spikes between samples), median RSS, RSS at 10% and at 90% of the rows, and
rows/s. The goal is a peak of at most 250 MB that does not grow with the backlog (100k vs 1M).

Run: .venv/bin/python bench/memory_bench.py                 (100,000 and 1,000,000 rows)
     .venv/bin/python bench/memory_bench.py --sizes 20000 --no-write
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import daemon_process, fresh_database
from bench.report import add_common_arguments, database_url, machine, write_section

HEADING = "Memory flat"
TARGET = "mem_items"
VIEW = f"{TARGET}_embeddings"
PEAK_LIMIT_MB = 250.0
FLAT_MARGIN = 0.10
"""RSS is flat when the largest backlog's peak is within 10% of the smallest's."""
STALL_SECONDS = 120.0
"""No new vector for this long: the daemon is stuck (or failing rows), not slow."""
SENTENCES = (
    "vector search index postgres embedding model latency token batch queue worker daemon",
    "table column trigger backfill sweep region gateway sparse dense query document cosine",
    "distance quantized halfvec rerank chunk overlap throughput budget minute second retry",
    "the daemon claims a round of rows embeds them and writes the vectors in one statement",
    "a backlog of a million rows should cost the daemon no more memory than a backlog of ten",
    "leases expire when a worker dies so another daemon can claim the rows it was holding",
    "every edit is captured by a trigger and delivered to the queue before the commit ends",
    "search reads the view of the active generation while a new generation is being built",
)
"""~15 words each; with the title about 40 tokens a row, like backfill_bench.py's texts."""


@dataclass(frozen=True)
class Sample:
    at: float
    rss_kb: int
    vectors: int


@dataclass(frozen=True)
class Result:
    rows: int
    samples: list[Sample]
    peak_kb: int
    rows_per_second: float
    drain_seconds: float

    def rss_at(self, share: float) -> int:
        """RSS of the first sample taken once ``share`` of the rows had vectors."""
        goal = share * self.rows
        return next(s.rss_kb for s in self.samples if s.vectors >= goal)

    @property
    def draining(self) -> list[Sample]:
        # From the first vector to the last: start-up and the idle tail are not the backlog.
        return [s for s in self.samples if 0 < s.vectors < self.rows] or self.samples

    @property
    def start_kb(self) -> int:
        """RSS once start-up (imports, migration check, pool) is over: at the first vector."""
        return next((s.rss_kb for s in self.samples if s.vectors), self.samples[0].rss_kb)


def proc_status_kb(pid: int, field: str) -> int:
    """A ``kB`` field of /proc/<pid>/status (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def populate(url: str, rows: int, dimensions: int, env: dict[str, str]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {TARGET} (id bigint PRIMARY KEY, title text, body text)")
        # One statement, all in the server: a million rows in seconds, none through Python.
        conn.execute(
            f"INSERT INTO {TARGET} SELECT i, 'item ' || i, (%s::text[])[1 + i %% %s] "
            "FROM generate_series(1, %s) i",
            (list(SENTENCES), len(SENTENCES), rows),
        )
        conn.execute(f"ANALYZE {TARGET}")
    # The target is added after the rows: they are a backlog for the start-up sweep to find,
    # as on a table that existed before syncsvc, not edits captured by the triggers.
    subprocess.run(
        [sys.executable, "-m", "syncsvc", "target", "add", TARGET, "--table", TARGET,
         "--columns", "title,body", "--provider", "local-hash",
         "--dimensions", str(dimensions)],
        env=env, check=True, capture_output=True,
    )  # fmt: skip


def tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def drain(url: str, rows: int, env: dict[str, str], interval: float, log: Path) -> Result:
    count = sql.SQL("SELECT count(*) FROM syncsvc.{}").format(sql.Identifier(VIEW))
    samples: list[Sample] = []
    with (
        psycopg.connect(url, autocommit=True) as conn,
        daemon_process(env, log, wait_started=False) as process,
    ):
        started = time.monotonic()
        next_at = started
        last_progress = (0, started)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"daemon exited ({process.returncode}):\n{tail(log)}")
            rss = proc_status_kb(process.pid, "VmRSS")
            row = conn.execute(count).fetchone()
            vectors = int(row[0]) if row else 0
            now = time.monotonic()
            samples.append(Sample(now - started, rss, vectors))
            if vectors >= rows:
                break
            if vectors > last_progress[0]:
                last_progress = (vectors, now)
            elif now - last_progress[1] > STALL_SECONDS:
                raise RuntimeError(
                    f"no progress for {STALL_SECONDS:g} s at {vectors:,}/{rows:,}:\n{tail(log)}"
                )
            # A fixed cadence, not a fixed pause: the count takes longer as the table grows.
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
        # Read before the daemon stops: the high-water mark dies with the process.
        peak = proc_status_kb(process.pid, "VmHWM")
        span_row = conn.execute(
            sql.SQL(
                "SELECT extract(epoch FROM max(embedded_at) - min(embedded_at)) FROM syncsvc.{}"
            ).format(sql.Identifier(VIEW))
        ).fetchone()
    span = float(span_row[0]) if span_row and span_row[0] else samples[-1].at
    return Result(
        rows=rows,
        samples=samples,
        peak_kb=max(peak, *(s.rss_kb for s in samples)),
        rows_per_second=rows / span,
        drain_seconds=span,
    )


def bench(base: str, rows: int, dimensions: int, interval: float) -> Result:
    url = fresh_database(base, f"syncsvc_memory_{rows}")
    env = {
        **os.environ,
        "SYNCSVC_DATABASE_URL": url,
        "SYNCSVC_LOG_LEVEL": "WARNING",
        # The HNSW build at 90% is the server's memory and minutes of its CPU at 1M rows,
        # not the daemon's: keep it out of the drain being measured.
        "SYNCSVC_SEARCH__INDEX_CHECK_INTERVAL_SECONDS": "86400",
    }
    populate(url, rows, dimensions, env)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            return drain(url, rows, env, interval, Path(scratch) / "daemon.log")
    finally:
        # A million 1,024-dim vectors are ~5 GB on disk: give them back before the next size.
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "syncsvc_memory_{rows}" WITH (FORCE)')


def mb(kb: float) -> str:
    return f"{kb / 1024:,.0f} MB"


def verdict(results: list[Result]) -> str:
    peak = max(r.peak_kb for r in results) / 1024
    within = "within" if peak <= PEAK_LIMIT_MB else "**over**"
    text = f"Highest peak {peak:,.0f} MB: {within} the {PEAK_LIMIT_MB:g} MB budget."
    if len(results) > 1:
        small, large = min(results, key=lambda r: r.rows), max(results, key=lambda r: r.rows)
        growth = large.peak_kb / small.peak_kb - 1
        flat = "flat" if growth <= FLAT_MARGIN else "**growing with the backlog**"
        text += (
            f" Peak at {large.rows:,} rows vs {small.rows:,}: {growth:+.1%} ({flat}; the bar "
            f"is {FLAT_MARGIN:.0%})."
        )
    return text


def report(results: list[Result], dimensions: int, interval: float) -> str:
    lines = [
        f"{machine()}; embedded PostgreSQL + pgvector; `syncsvc run` in its own process with "
        f"the shipped worker settings, the offline `local-hash` provider at {dimensions} dims; "
        f"RSS sampled every {interval:g} s. `python bench/memory_bench.py`",
        "",
        "| backlog rows | RSS at first vector | peak RSS | median RSS | RSS at 10% | RSS at 90% | "
        "10% → 90% | rows/s | drain |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        low, high = r.rss_at(0.1), r.rss_at(0.9)
        lines.append(
            f"| {r.rows:,} | {mb(r.start_kb)} | {mb(r.peak_kb)} | "
            f"{mb(statistics.median(s.rss_kb for s in r.draining))} | {mb(low)} | {mb(high)} | "
            f"{(high - low) / 1024:+,.0f} MB | {r.rows_per_second:,.0f} | "
            f"{r.drain_seconds:,.0f} s |"
        )
    lines += [
        "",
        "The rows are in the table before the target is added, so the start-up sweep finds "
        "the whole backlog and queues it in chunks while the worker drains it. *Peak* is the "
        "kernel's high-water mark (`VmHWM`), which includes start-up and any spike between "
        "samples; *median* is over the samples taken between the first vector and the last; "
        "*RSS at 10% / 90%* is the first sample once that share of the rows had vectors; "
        "rows/s is over the span of `embedded_at`. The search-index build (at 90% of the "
        "rows, in the server) is held off so that it does not share the drain.",
        "",
        f"Goal: peak RSS at most {PEAK_LIMIT_MB:g} MB and not growing with the backlog. "
        + verdict(results),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="backlog rows"
    )
    parser.add_argument("--dimensions", type=int, default=1024)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    add_common_arguments(parser)
    args = parser.parse_args()
    base = database_url(args.database_url)
    results = []
    for rows in args.sizes:
        result = bench(base, rows, args.dimensions, args.interval)
        # The whole curve, not only the table's two points: where it rises, if it does.
        curve = ", ".join(f"{d}0% {result.rss_at(d / 10) / 1024:.0f}" for d in range(1, 11))
        print(
            f"{rows:,} rows: peak {mb(result.peak_kb)}, {result.rows_per_second:,.0f} rows/s, "
            f"{len(result.samples)} samples; RSS (MB) by progress: {curve}",
            flush=True,
        )
        results.append(result)
    body = report(results, args.dimensions, args.interval)
    print(body)
    if not args.no_write:
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
