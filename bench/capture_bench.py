"""Cost of syncsvc's change capture for the application's bulk writes.

Times 100k-row INSERT, UPDATE of an embedded column, UPDATE of a non-embedded column and
DELETE on a plain table and on a table registered as a syncsvc target (statement-level triggers
with transition tables), on the embedded PostgreSQL. Run: .venv/bin/python bench/capture_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import database_url, machine, write_section
from syncsvc import migrate, targets
from syncsvc.database import aconnect
from syncsvc.settings import Settings

STATEMENTS = {
    "INSERT": "INSERT INTO {t} SELECT i, 'title ' || i, 'body text ' || i, 0 "
    "FROM generate_series(1, {n}) i",
    "UPDATE embedded column": "UPDATE {t} SET body = body || ' edited'",
    "UPDATE other column": "UPDATE {t} SET price = price + 1",
    "DELETE": "DELETE FROM {t}",
}


def timed(conn: psycopg.Connection[tuple[object, ...]], statement: str) -> float:
    started = time.perf_counter()
    conn.execute(statement)
    return time.perf_counter() - started


def run(url: str, rows: int, repeats: int) -> dict[str, tuple[float, float, int]]:
    results: dict[str, tuple[float, float, int]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name in ("plain", "tracked"):
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(
                f"CREATE TABLE {name} (id int PRIMARY KEY, title text, body text, price int)"
            )

        async def register() -> None:
            aconn = await aconnect(url)
            spec = targets.TargetSpec(
                name="tracked", table="tracked", columns=("title", "body"), model="local-hash"
            )
            await targets.add_target(aconn, Settings(), spec)
            await aconn.close()

        asyncio.run(register())
        samples: dict[str, dict[str, list[float]]] = {
            s: {"plain": [], "tracked": []} for s in STATEMENTS
        }
        queued: dict[str, int] = {}
        for _ in range(repeats):
            for statement, template in STATEMENTS.items():
                for table in ("plain", "tracked"):
                    conn.execute("DELETE FROM syncsvc.inbox")
                    if statement != "INSERT":
                        conn.execute(f"TRUNCATE {table}")
                        conn.execute(STATEMENTS["INSERT"].format(t=table, n=rows))
                        conn.execute("DELETE FROM syncsvc.inbox")
                    elif table in ("plain", "tracked"):
                        conn.execute(f"TRUNCATE {table}")
                        conn.execute("DELETE FROM syncsvc.inbox")
                    conn.execute("VACUUM ANALYZE " + table)
                    samples[statement][table].append(timed(conn, template.format(t=table, n=rows)))
                    if table == "tracked":
                        row = conn.execute(
                            "SELECT coalesce(sum(jsonb_array_length(pks)), 0) FROM syncsvc.inbox"
                        ).fetchone()
                        queued[statement] = int(row[0]) if row else 0
        for statement in STATEMENTS:
            plain = statistics.median(samples[statement]["plain"])
            tracked = statistics.median(samples[statement]["tracked"])
            results[statement] = (plain, tracked, queued[statement])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--database-url", default=None, help="default: a fresh embedded server")
    args = parser.parse_args()
    url = database_url(args.database_url)
    migrate.upgrade(url)
    results = run(url, args.rows, args.repeats)
    lines = [
        f"{args.rows:,} rows per statement, median of {args.repeats}; {machine()}; "
        "embedded PostgreSQL 18 + pgvector. `python bench/capture_bench.py`",
        "",
        "| statement | plain table | syncsvc target | overhead | rows queued |",
        "|---|---:|---:|---:|---:|",
    ]
    for statement, (plain, tracked, queued) in results.items():
        lines.append(
            f"| {statement} | {plain * 1000:.0f} ms | {tracked * 1000:.0f} ms | "
            f"{tracked / plain:.2f}× | {queued:,} |"
        )
    body = "\n".join(lines)
    print(body)
    write_section("Change capture overhead", body)


if __name__ == "__main__":
    main()
