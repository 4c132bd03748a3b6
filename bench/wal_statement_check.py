"""Is a WAL target's table slower than a plain one? plain vs walled alone, both orders.

``bench/capture_bench.py`` runs its tables in one order each round (plain, triggers, floor,
WAL); this runs only the plain and the WAL-captured table, the single-row statements of that
bench (the same pgbench method and sizes), first plain then WAL, then WAL then plain, and then
again with the WAL table taken out of syncsvc's publication (what publication membership itself
costs). With ``--bulk N``: the bulk statements instead, N times each table, the order flipped
every time, summed (a 100k-row DELETE takes ~40 ms of CPU, measured in 10 ms ticks).
Prints the ratios; nothing is written to BENCHMARKS.md.
Run: .venv/bin/python bench/wal_statement_check.py [--statement "UPDATE other column"]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import capture_bench as cb
from bench.report import cpu_seconds, database_url
from syncsvc.ops import migrate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--transactions", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--statement", action="append", help="default: every single-row one")
    parser.add_argument("--bulk", type=int, default=0, help="bulk statements, N times each")
    parser.add_argument("--only", help="with --bulk: this bulk statement only")
    parser.add_argument(
        "--unpublished",
        action="store_true",
        help="with --bulk: the WAL table out of the publication",
    )
    args = parser.parse_args()
    url = database_url(None)
    cb.logical_decoding(url, own_server=True)
    migrate.upgrade(url)
    cb.setup(url, args.rows)
    if args.bulk:
        if args.only:
            cb.BULK = {args.only: cb.BULK[args.only]}
        if args.unpublished:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER PUBLICATION syncsvc DROP TABLE walled")
        bulk(url, args.rows, args.bulk)
        return
    if args.statement:
        cb.SINGLE = {s: cb.SINGLE[s] for s in args.statement}
    variants = (
        ("plain first", ("plain", "walled")),
        ("WAL first", ("walled", "plain")),
        ("unpublished, plain first", ("plain", "walled")),
    )
    for label, order in variants:
        if label.startswith("unpublished"):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER PUBLICATION syncsvc DROP TABLE walled")
        cb.TABLES = order
        results = cb.single_row(url, args.rows, args.transactions, args.rounds)
        for statement, by_table in results.items():
            plain, walled = by_table["plain"], by_table["walled"]
            print(
                f"{label}: {statement}: wall {walled.wall / plain.wall:.2f}×, "
                f"server CPU {walled.cpu / plain.cpu:.2f}×",
                flush=True,
            )


def bulk(url: str, rows: int, times: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        pid = int(str(row[0]))
        for statement, template in cb.BULK.items():
            wall = {"plain": 0.0, "walled": 0.0}
            cpu = dict(wall)
            for n in range(times):
                for table in ("plain", "walled") if n % 2 == 0 else ("walled", "plain"):
                    cb.reset(conn, table, rows)
                    if statement == "INSERT":
                        conn.execute(f"TRUNCATE {table}")
                    used, started = cpu_seconds(pid), time.perf_counter()
                    conn.execute(template.format(t=table, n=rows))
                    wall[table] += time.perf_counter() - started
                    cpu[table] += cpu_seconds(pid) - used
            print(
                f"bulk {statement}, {times} each: plain {wall['plain'] / times * 1e3:.0f} ms "
                f"(CPU {cpu['plain'] / times * 1e3:.0f}), WAL {wall['walled'] / times * 1e3:.0f} "
                f"ms (CPU {cpu['walled'] / times * 1e3:.0f}): wall "
                f"{wall['walled'] / wall['plain']:.2f}×, CPU {cpu['walled'] / cpu['plain']:.2f}×",
                flush=True,
            )


if __name__ == "__main__":
    main()
