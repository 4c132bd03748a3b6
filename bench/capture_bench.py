"""Cost of syncsvc's change capture for the application's writes, daemon stopped.

Four 100k-row tables of one shape: ``plain`` (no triggers), ``tracked`` (a syncsvc target
embedding ``title`` and ``body``, capture = triggers), ``walled`` (the same target with
capture = wal: no trigger, the table is in syncsvc's publication and a logical slot exists) and
``floor`` (no-op statement triggers with the same transition tables: what PostgreSQL itself
charges before syncsvc's function runs a line). The server runs with ``wal_level = logical``
(the bench's own embedded server is switched to it; an external server without it is measured
without the ``walled`` table), so ``plain`` pays the logical WAL too: the WAL column is what WAL
capture adds on top of a server already configured for it.

* Single-row statements through pgbench (``-c 1 -t N``, the embedded server's own pgbench),
  tables interleaved round by round; figures are medians of the rounds. The session runs with
  ``synchronous_commit = off`` so the disk's flush time does not hide CPU cost: the ratios are
  the worst an application sees (with flushes every commit costs more and they move toward 1).
* Bulk statements of 100,000 rows, median of ``--repeats``.

Each figure is given as wall time and as server CPU (the backends' user + system time from
/proc, which another process on the machine barely disturbs).
Run: .venv/bin/python bench/capture_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.capture_findings import FINDINGS, WAL_FINDINGS
from bench.capture_runs import Ratio, Sample, load, median, paired, ratio_of, spread
from bench.processes import restart_server
from bench.report import cpu_seconds, database_url, machine, parent, server_cpu, write_section
from syncsvc.capture import targets
from syncsvc.core.models import Capture
from syncsvc.core.settings import Settings
from syncsvc.db.database import aconnect
from syncsvc.ops import migrate

TABLES = ("plain", "tracked", "floor", "walled")
FILL = (
    "INSERT INTO {t} SELECT i, 'title ' || i, 'body text ' || i, 0 FROM generate_series(1, {n}) i"
)
SINGLE = {
    "UPDATE other column": "\\set id random(1, {n})\n"
    "UPDATE {t} SET price = price + 1 WHERE id = :id;",
    "UPDATE embedded column": "\\set id random(1, {n})\n"
    "UPDATE {t} SET body = 'body edited ' || random() WHERE id = :id;",
    "INSERT": "INSERT INTO {t} VALUES (nextval('{t}_ins'), 'title', 'body text', 0);",
    "DELETE": "DELETE FROM {t} WHERE id = (SELECT nextval('{t}_del'));",
}
BULK = {
    "INSERT": FILL,
    "UPDATE other column": "UPDATE {t} SET price = price + 1",
    "UPDATE embedded column": "UPDATE {t} SET body = body || ' edited'",
    "DELETE": "DELETE FROM {t}",
}
# The targets (tracked / plain).
SINGLE_TARGET = {
    "UPDATE other column": 1.05,
    "UPDATE embedded column": 1.3,
    "INSERT": 1.3,
    "DELETE": 1.3,
}
WAL_TARGET = 1.05
"""Every application statement in WAL mode, against plain (issue 24)."""
BULK_TARGET = {"INSERT": 1.2, "UPDATE other column": 1.1, "DELETE": 1.5}


def logical_decoding(url: str, own_server: bool) -> bool:
    """Whether the server has ``wal_level = logical``; the bench's own server is switched to it
    (ALTER SYSTEM, then ``pg_ctl restart`` as the data directory's owner)."""
    with psycopg.connect(url, autocommit=True) as conn:
        level = conn.execute("SHOW wal_level").fetchone()
    if level is not None and level[0] == "logical":
        return True
    if not own_server:
        return False
    restart_server(url, {"wal_level": "logical"})
    return True


def setup(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for table in TABLES:
            conn.execute(f"DROP TABLE IF EXISTS {table}")
            conn.execute(
                f"CREATE TABLE {table} (id int PRIMARY KEY, title text, body text, price int) "
                "WITH (autovacuum_enabled = off)"
            )
        conn.execute(
            "CREATE OR REPLACE FUNCTION public.noop() RETURNS trigger "
            "LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"
        )
        conn.execute(
            "CREATE TRIGGER i AFTER INSERT ON floor REFERENCING NEW TABLE AS n "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.noop()"
        )
        conn.execute(
            "CREATE TRIGGER u AFTER UPDATE ON floor REFERENCING OLD TABLE AS o NEW TABLE AS n "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.noop()"
        )
        conn.execute(
            "CREATE TRIGGER d AFTER DELETE ON floor REFERENCING OLD TABLE AS o "
            "FOR EACH STATEMENT EXECUTE FUNCTION public.noop()"
        )

    async def register() -> None:
        aconn = await aconnect(url)
        for name, capture in (("tracked", Capture.TRIGGERS), ("walled", Capture.WAL)):
            if name not in TABLES:
                continue
            spec = targets.TargetSpec(
                name=name,
                table=name,
                columns=("title", "body"),
                model="local-hash",
                capture=capture,
            )
            await targets.add_target(aconn, Settings(), spec)
        await aconn.close()

    asyncio.run(register())


def reset(conn: psycopg.Connection[tuple[object, ...]], table: str, rows: int) -> None:
    conn.execute(f"TRUNCATE {table}")
    conn.execute(FILL.format(t=table, n=rows))
    conn.execute(f"DROP SEQUENCE IF EXISTS {table}_ins, {table}_del")
    conn.execute(f"CREATE SEQUENCE {table}_ins START {rows * 10}")
    conn.execute(f"CREATE SEQUENCE {table}_del")
    conn.execute("DELETE FROM syncsvc.inbox")
    conn.execute(f"VACUUM ANALYZE {table}")


def pgbench_path(postmaster: int) -> str:
    # The pgbench that ships beside the running server's own binary.
    return str(Path(os.readlink(f"/proc/{postmaster}/exe")).with_name("pgbench"))


def single_row(url: str, rows: int, transactions: int, rounds: int) -> dict[str, dict[str, Sample]]:
    info = psycopg.conninfo.conninfo_to_dict(url)
    results: dict[str, dict[str, Sample]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        postmaster = parent(int(str(backend[0])))
        pgbench = pgbench_path(postmaster)
        env = dict(os.environ, PGOPTIONS="-c synchronous_commit=off")
        host, user, dbname = str(info.get("host", "")), str(info.get("user")), str(info["dbname"])
        with tempfile.TemporaryDirectory() as scripts:
            for statement, template in SINGLE.items():
                for table in TABLES:
                    reset(conn, table, rows)
                    Path(scripts, f"{table}.sql").write_text(template.format(t=table, n=rows))
                samples: dict[str, list[Sample]] = defaultdict(list)
                for _ in range(rounds):
                    for table in TABLES:
                        conn.execute(f"VACUUM {table}")
                        before = server_cpu(postmaster)
                        out = subprocess.run(
                            [
                                pgbench,
                                "-h",
                                host,
                                "-U",
                                user,
                                "-n",
                                "-c",
                                "1",
                                "-t",
                                str(transactions),
                                "-f",
                                f"{table}.sql",
                                dbname,
                            ],
                            capture_output=True,
                            text=True,
                            cwd=scripts,
                            env=env,
                            check=True,
                        ).stdout
                        time.sleep(0.3)  # the backend's CPU counts once the postmaster reaps it
                        cpu = (server_cpu(postmaster) - before) / transactions
                        match = re.search(r"tps = ([0-9.]+)", out)
                        assert match, out
                        samples[table].append(Sample(1 / float(match.group(1)), cpu))
                results[statement] = {
                    t: Sample(
                        statistics.median(s.wall for s in samples[t]),
                        statistics.median(s.cpu for s in samples[t]),
                    )
                    for t in TABLES
                }
                print(
                    statement,
                    {
                        t: f"{s.wall * 1e6:.0f}/{s.cpu * 1e6:.0f} us"
                        for t, s in results[statement].items()
                    },
                    flush=True,
                )
    return results


def bulk(url: str, rows: int, repeats: int) -> tuple[dict[str, dict[str, Sample]], dict[str, int]]:
    samples: dict[str, dict[str, list[Sample]]] = {s: defaultdict(list) for s in BULK}
    queued: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None
        pid = int(str(backend[0]))
        for _ in range(repeats):
            for statement, template in BULK.items():
                for table in TABLES:
                    reset(conn, table, rows)
                    if statement == "INSERT":
                        conn.execute(f"TRUNCATE {table}")
                    conn.execute("DELETE FROM syncsvc.inbox")
                    cpu, started = cpu_seconds(pid), time.perf_counter()
                    conn.execute(template.format(t=table, n=rows))
                    wall = time.perf_counter() - started
                    samples[statement][table].append(Sample(wall, cpu_seconds(pid) - cpu))
                    if table == "tracked":
                        row = conn.execute(
                            "SELECT coalesce(sum(jsonb_array_length(pks)), 0) FROM syncsvc.inbox"
                        ).fetchone()
                        queued[statement] = int(str(row[0])) if row else 0
    medians = {
        statement: {
            t: Sample(
                statistics.median(s.wall for s in by_table[t]),
                statistics.median(s.cpu for s in by_table[t]),
            )
            for t in TABLES
        }
        for statement, by_table in samples.items()
    }
    return medians, queued


def _verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return "—"
    return f"≤ {target:.2f}× {'met' if ratio <= target else 'not met'}"


def _rows(
    results: dict[str, dict[str, Sample]],
    unit: float,
    fmt: str,
    targets_: dict[str, float],
    ratio: Ratio | None = None,
) -> list[str]:
    of = ratio or ratio_of(results)
    lines = []
    for statement, by_table in results.items():
        plain, tracked = by_table["plain"], by_table["tracked"]
        walled = by_table.get("walled")
        wall_ratio, cpu_ratio = of(statement, "tracked", "wall"), of(statement, "tracked", "cpu")
        floor_ratio = of(statement, "floor", "cpu")
        verdict = ""
        if walled is None:
            wal = "| — | — | — | — "
        else:
            wal_wall, wal_cpu = of(statement, "walled", "wall"), of(statement, "walled", "cpu")
            verdict = f"; WAL {_verdict(max(wal_wall, wal_cpu), WAL_TARGET)}"
            wal = (
                f"| {walled.wall * unit:{fmt}} | {wal_wall:.2f}× "
                f"| {walled.cpu * unit:{fmt}} | {wal_cpu:.2f}× "
            )
        lines.append(
            f"| {statement} | {plain.wall * unit:{fmt}} | {tracked.wall * unit:{fmt}} | "
            f"{wall_ratio:.2f}× | {plain.cpu * unit:{fmt}} | {tracked.cpu * unit:{fmt}} | "
            f"{cpu_ratio:.2f}× | {floor_ratio:.2f}× "
            f"{wal}| triggers {_verdict(max(wall_ratio, cpu_ratio), targets_.get(statement))}"
            f"{verdict} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="bulk statements")
    parser.add_argument("--transactions", type=int, default=20_000, help="per pgbench run")
    parser.add_argument("--rounds", type=int, default=5, help="pgbench runs per table")
    parser.add_argument("--database-url", default=None, help="default: a fresh embedded server")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--save", help="also write this run's figures to this JSON file")
    parser.add_argument(
        "--combine", nargs="+", help="no run: report the medians of runs saved with --save"
    )
    args = parser.parse_args()
    if args.combine:
        runs = [load(path) for path in args.combine]
        body = report(
            median([r["single"] for r in runs]),
            median([r["bulk"] for r in runs]),
            runs[0]["queued"],
            runs[0]["args"],
            runs[0]["version"],
            [r["load"] for r in runs],
            spread(runs),
            (paired([r["single"] for r in runs]), paired([r["bulk"] for r in runs])),
        )
    else:
        body = run(args)
    print(body)
    if not args.no_write:
        write_section("Change capture overhead", body)


def run(args: argparse.Namespace) -> str:
    url = database_url(args.database_url)
    global TABLES
    if not logical_decoding(url, own_server=args.database_url is None):
        TABLES = tuple(t for t in TABLES if t != "walled")
    migrate.upgrade(url)
    setup(url, args.rows)
    loads = [os.getloadavg()[0]]
    single = single_row(url, args.rows, args.transactions, args.rounds)
    bulk_results, queued = bulk(url, args.rows, args.repeats)
    loads.append(os.getloadavg()[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    version = str(row[0]) if row else "?"
    sizes = {k: getattr(args, k) for k in ("rows", "repeats", "transactions", "rounds")}
    if args.save:
        saved = {"single": single, "bulk": bulk_results, "queued": queued, "args": sizes}
        saved |= {"version": version, "load": statistics.mean(loads)}
        Path(args.save).write_text(
            json.dumps(saved, default=lambda s: [s.wall, s.cpu] if isinstance(s, Sample) else s)
        )
    if "walled" in TABLES:
        # An external server must not keep the slot (and its WAL) after the bench.
        async def unregister() -> None:
            aconn = await aconnect(url)
            await targets.remove_target(aconn, "walled")
            await aconn.close()

        asyncio.run(unregister())
    return report(single, bulk_results, queued, sizes, version, [statistics.mean(loads)])


def report(
    single: dict[str, dict[str, Sample]],
    bulk_results: dict[str, dict[str, Sample]],
    queued: dict[str, int],
    sizes: dict[str, int],
    version: str,
    loads: list[float],
    band: str = "",
    ratios: tuple[Ratio, Ratio] | None = None,
) -> str:
    runs = (
        ""
        if len(loads) == 1
        else f"; {len(loads)} runs of the whole bench, one after another: figures are the "
        "medians of the runs' figures, ratios the medians of the runs' own ratios"
    )
    header = (
        "| statement | plain | triggers | overhead | server CPU plain | server CPU triggers | "
        "CPU overhead | transition tables alone (CPU) | WAL capture | overhead | server CPU WAL "
        "| CPU overhead | target |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )
    lines = [
        f"Daemon stopped; {sizes['rows']:,}-row tables; {machine()}; embedded PostgreSQL "
        f"{version} at wal_level = logical; load average "
        f"{', '.join(f'{x:.1f}' for x in loads)} (other sessions' benches and tests were "
        f"running on the 2 cores){runs}. `python bench/capture_bench.py`",
        "",
        f"**Single-row statements** (pgbench, one client, {sizes['transactions']:,} transactions "
        f"per run, median of {sizes['rounds']} interleaved runs, synchronous_commit off; µs per "
        "statement):",
        "",
        header,
        *_rows(single, 1e6, ".0f", SINGLE_TARGET, ratios[0] if ratios else None),
        "",
        f"**Bulk statements** ({sizes['rows']:,} rows each, median of {sizes['repeats']}; ms):",
        "",
        header,
        *_rows(bulk_results, 1e3, ".0f", BULK_TARGET, ratios[1] if ratios else None),
        "",
        "Rows queued by the bulk statements on the trigger target: "
        + ", ".join(f"{s} {n:,}" for s, n in queued.items())
        + ".",
        "",
        *([band, ""] if band else []),
        *([WAL_FINDINGS, ""] if "walled" in single[next(iter(single))] else []),
        "**Triggers**: " + FINDINGS,
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
