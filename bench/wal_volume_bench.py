"""WAL volume added by ``wal_level = logical``: bytes of WAL per application statement.

One embedded server, one 100k-row table shaped like ``bench/capture_bench.py``'s (primary key,
the default replica identity), measured at ``wal_level = replica`` and again, after a restart,
at ``wal_level = logical``. Bytes = ``pg_current_wal_insert_lsn()`` after - before, over
``--statements`` single-row statements (each its own transaction, so commit records count) and
over each 100k-row bulk statement. ``full_page_writes = off`` for the measurement: full-page
images depend on where the checkpoints fall, not on the WAL level, and would swamp the
difference. No slot exists: the volume depends on the level, not on a reader.
Run: .venv/bin/python bench/wal_volume_bench.py  (prints only unless --write)
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.processes import restart_server
from bench.report import database_url, machine, write_section

FILL = "INSERT INTO t SELECT i, 'title ' || i, 'body text ' || i, 0 FROM generate_series(1, %s) i"
SINGLE = {
    "UPDATE other column": "UPDATE t SET price = price + 1 WHERE id = %(id)s",
    "UPDATE embedded column": "UPDATE t SET body = 'body edited ' || random() WHERE id = %(id)s",
    "INSERT": "INSERT INTO t VALUES (%(new)s, 'title', 'body text', 0)",
    "DELETE": "DELETE FROM t WHERE id = %(gone)s",
}
BULK = {
    "INSERT": FILL,
    "UPDATE other column": "UPDATE t SET price = price + 1",
    "UPDATE embedded column": "UPDATE t SET body = body || ' edited'",
    "DELETE": "DELETE FROM t",
}

FINDINGS = (
    "`wal_level = logical` makes a single-row statement's WAL 4–16% larger (8–35 bytes: "
    "PostgreSQL then logs an UPDATE's new row whole rather than prefix/suffix-compressed against"
    " the old one, a DELETE's replica-identity key, and a little decoding information per "
    "record); in bulk only DELETE grows (+15%, the key of each deleted row). The level is "
    "server-wide, so every table pays it, captured or not. `REPLICA IDENTITY FULL` (optional "
    "for WAL targets: it lets the reader skip an UPDATE that leaves the embedded columns "
    "unchanged before it is even queued) would add the whole old row to each UPDATE and DELETE:"
    " not measured here. Apart from the volume, the slot keeps WAL on the server until the "
    "daemon has read it: the *retained* figure of `syncsvc status` and the admin page, bounded "
    "by `max_slot_wal_keep_size`."
)

Conn = psycopg.Connection[tuple[object, ...]]


def lsn(conn: Conn) -> int:
    row = conn.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(str(row[0]))


def reset(conn: Conn, rows: int) -> None:
    conn.execute("DROP TABLE IF EXISTS t")
    conn.execute(
        "CREATE TABLE t (id int PRIMARY KEY, title text, body text, price int) "
        "WITH (autovacuum_enabled = off)"
    )
    conn.execute(FILL, (rows,))
    conn.execute("VACUUM ANALYZE t")
    conn.execute("CHECKPOINT")


def measure(url: str, rows: int, statements: int) -> dict[str, tuple[float, float]]:
    """Per statement type: (bytes per single-row statement, bytes per bulk statement)."""
    rng = random.Random(24)
    found: dict[str, tuple[float, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        for statement, template in SINGLE.items():
            reset(conn, rows)
            ids = rng.sample(range(1, rows + 1), statements)
            start = lsn(conn)
            for n, pk in enumerate(ids):
                conn.execute(template, {"id": pk, "new": rows + 1 + n, "gone": pk})
            single = (lsn(conn) - start) / statements
            reset(conn, rows)
            if statement == "INSERT":
                conn.execute("TRUNCATE t")
                conn.execute("CHECKPOINT")
            start = lsn(conn)
            conn.execute(BULK[statement], (rows,) if statement == "INSERT" else None)
            found[statement] = (single, float(lsn(conn) - start))
    return found


def _added(logical: float, replica: float) -> str:
    share = logical / replica - 1
    return "0%" if abs(share) < 0.005 else f"{share:+.0%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--statements", type=int, default=5_000, help="single-row, per type")
    parser.add_argument("--write", action="store_true", help="write the BENCHMARKS.md section")
    args = parser.parse_args()
    url = database_url(None)
    results = {}
    for level in ("replica", "logical"):
        restart_server(url, {"wal_level": level, "full_page_writes": "off"})
        results[level] = measure(url, args.rows, args.statements)
        print(level, results[level], flush=True)
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
    lines = [
        f"{args.rows:,}-row table (primary key, default replica identity), "
        f"{args.statements:,} single-row statements per type, one transaction each; "
        "full_page_writes off; embedded PostgreSQL "
        f"{version[0] if version else '?'}; {machine()}. `python bench/wal_volume_bench.py`",
        "",
        "| statement | single-row, replica | single-row, logical | added | "
        f"bulk ({args.rows:,} rows), replica | bulk, logical | added |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for statement in SINGLE:
        r_single, r_bulk = results["replica"][statement]
        l_single, l_bulk = results["logical"][statement]
        lines.append(
            f"| {statement} | {r_single:.0f} B | {l_single:.0f} B | "
            f"{_added(l_single, r_single)} | {r_bulk / 2**20:.1f} MB | "
            f"{l_bulk / 2**20:.1f} MB | {_added(l_bulk, r_bulk)} |"
        )
    body = "\n".join([*lines, "", FINDINGS])
    print(body)
    if args.write:
        write_section("WAL volume of wal_level = logical", body)


if __name__ == "__main__":
    main()
