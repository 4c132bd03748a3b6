"""The command line as a user drives it: real processes against a real database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psycopg
import pytest


def syncsvc(url: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SYNCSVC_DATABASE_URL": url}
    result = subprocess.run(
        [sys.executable, "-m", "syncsvc", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"syncsvc {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def setup_table(url: str, rows: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text, n int)")
        conn.execute(
            "INSERT INTO notes SELECT i, 'note ' || i, 'some words ' || i, i "
            "FROM generate_series(1, %s) i",
            (rows,),
        )


def test_target_lifecycle_and_status(db_url: str) -> None:
    setup_table(db_url, 30)
    out = syncsvc(
        db_url,
        "target",
        "add",
        "notes",
        "--table",
        "notes",
        "--columns",
        "title,body",
        "--dimensions",
        "128",
        "--template",
        "{title}: {body}",
        "--provider",
        "local-hash",
    )
    assert "target notes" in out.stdout
    listed = json.loads(syncsvc(db_url, "target", "list", "--json").stdout)
    assert listed[0]["template"] == "{title}: {body}"
    assert listed[0]["generations"][0]["dims"] == 128

    syncsvc(db_url, "run", "--until-idle")
    status = json.loads(syncsvc(db_url, "status", "--json").stdout)
    assert (status[0]["rows"], status[0]["embedded"], status[0]["pending"]) == (30, 30, 0)
    assert status[0]["dimensions"] == 128

    syncsvc(db_url, "target", "remove", "notes")
    with psycopg.connect(db_url) as conn:
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'notes'::regclass"
        ).fetchone()
        assert triggers == (0,)
        assert conn.execute("SELECT to_regclass('syncsvc.notes_g1')").fetchone() == (None,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--table", "nope", "--columns", "body"], "table 'nope' does not exist"),
        (["--table", "notes", "--columns", "missing"], "column 'missing' does not exist"),
        (["--table", "notes", "--columns", "n"], "not text-like"),
        (["--table", "notes", "--columns", "body", "--template", "{title}"], "not one of"),
        (["--table", "notes", "--columns", "body", "--dimensions", "1000"], "does not offer"),
        (["--table", "notes", "--columns", "body", "--pk", "n"], "not the primary key"),
        (["--table", "notes", "--columns", "body", "--provider", "nope"], "unknown provider"),
    ],
)
def test_target_add_validates_up_front(db_url: str, args: list[str], message: str) -> None:
    setup_table(db_url, 1)
    provider = [] if "--provider" in args else ["--provider", "local-hash"]
    result = syncsvc(db_url, "target", "add", "notes", *args, *provider, check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM syncsvc.targets").fetchone() == (0,)


def test_missing_pgvector_gives_clear_error(no_pgvector_url: str) -> None:
    result = syncsvc(no_pgvector_url, "migrate", check=False)
    assert result.returncode == 1
    assert "pgvector is not available" in result.stderr
    assert "CREATE EXTENSION vector" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_gives_clear_error(unreachable_url: str) -> None:
    result = syncsvc(unreachable_url, "status", check=False)
    assert result.returncode == 1
    assert "cannot connect to PostgreSQL" in result.stderr
    assert "Traceback" not in result.stderr


def test_migrate_sql_prints_ddl(db_url: str) -> None:
    out = syncsvc(db_url, "migrate", "--sql").stdout
    assert "CREATE TABLE syncsvc.targets" in out


def test_sigterm_stops_gracefully(db_url: str) -> None:
    setup_table(db_url, 5)
    syncsvc(
        db_url,
        "target",
        "add",
        "notes",
        "--table",
        "notes",
        "--columns",
        "body",
        "--provider",
        "local-hash",
    )
    env = {**os.environ, "SYNCSVC_DATABASE_URL": db_url}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncsvc", "run"], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    with psycopg.connect(db_url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            (count,) = conn.execute("SELECT count(*) FROM syncsvc.notes_embeddings").fetchone()
            if count == 5:
                break
            time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert proc.stderr is not None
    assert "daemon" in proc.stderr.read()


def test_failed_list_and_retry(db_url: str) -> None:
    setup_table(db_url, 3)
    syncsvc(
        db_url,
        "target",
        "add",
        "notes",
        "--table",
        "notes",
        "--columns",
        "body",
        "--provider",
        "local-hash",
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO syncsvc.queue (target_id, pk, state, attempts, last_error, request_id) "
            "VALUES (1, '[2]', 'failed', 6, '400 DataInspectionFailed: bad input', 'req-9')"
        )
    listed = json.loads(syncsvc(db_url, "failed", "list", "--json").stdout)
    assert [(r["target"], r["pk"], r["attempts"], r["request_id"]) for r in listed] == [
        ("notes", {"id": 2}, 6, "req-9")
    ]
    assert "DataInspectionFailed" in listed[0]["last_error"]
    out = syncsvc(db_url, "failed", "retry", "--target", "notes").stdout
    assert "1 failed rows queued again" in out
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT state, attempts FROM syncsvc.queue").fetchone()
    assert row == ("pending", 0)


def test_unicode_template_is_stored_and_embedded_verbatim(db_url: str) -> None:
    from tests.helpers import expected

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE posts (id int PRIMARY KEY, title text, body text)")
        conn.execute("INSERT INTO posts VALUES (1, '望远镜', 'كيف تعمل 🔭')")
    template = r"标题：{title}\n内容：{body} — ✓ ‏עברית\t😀 \x41"
    rendered = "标题：望远镜\n内容：كيف تعمل 🔭 — ✓ ‏עברית\t😀 \\x41"
    add = ["target", "add", "posts", "--table", "posts", "--columns", "title,body"]
    add += ["--provider", "local-hash"]
    add += ["--dimensions", "64", "--template", template]
    preview = syncsvc(db_url, *add, "--dry-run")
    assert json.dumps(rendered, ensure_ascii=False) in preview.stdout
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM syncsvc.targets").fetchone() == (0,)
    syncsvc(db_url, *add)
    syncsvc(db_url, "run", "--until-idle")
    with psycopg.connect(db_url, autocommit=True) as conn:
        stored = conn.execute("SELECT template FROM syncsvc.targets").fetchone()
        assert stored == ("标题：{title}\n内容：{body} — ✓ ‏עברית\t😀 \\x41",)
        row = conn.execute("SELECT embedding::text FROM syncsvc.posts_embeddings").fetchone()
    assert row is not None
    vector = [float(x) for x in row[0].strip("[]").split(",")]
    assert vector == pytest.approx(list(expected(rendered, 64)), abs=1e-6)


def test_demo_runs_as_the_owner(db_url: str) -> None:
    out = syncsvc(db_url, "demo")
    assert "Done. Vectors live in syncsvc.demo_articles_embeddings" in " ".join(out.stdout.split())
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM syncsvc.demo_articles_embeddings").fetchone()
    assert row is not None and row[0] > 0


def test_version() -> None:
    from importlib.metadata import version

    result = subprocess.run(
        [sys.executable, "-m", "syncsvc", "--version"], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == f"syncsvc {version('syncsvc')}"


def test_until_idle_stops_while_a_paused_target_still_holds_work(db_url: str) -> None:
    """A paused target's queue is not work the daemon can do: ``--until-idle`` must not wait
    for it forever. It embeds everything else, then says what is left and exits 3."""
    setup_table(db_url, 20)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE memos (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO memos SELECT i, 'memo ' || i FROM generate_series(1, 12) i")
    for name, columns in (("notes", "title,body"), ("memos", "body")):
        syncsvc(db_url, "target", "add", name, "--table", name, "--columns", columns,
                "--dimensions", "64", "--provider", "local-hash")  # fmt: skip
    syncsvc(db_url, "run", "--until-idle")
    vectors = "SELECT id, embedding::text FROM syncsvc.notes_embeddings ORDER BY id"
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = conn.execute(vectors).fetchall()
        conn.execute("SELECT syncsvc.pause_target('memos', 'held for the test')")
        conn.execute("UPDATE memos SET body = body || ' edited'")
        conn.execute("UPDATE notes SET body = body || ' edited'")
    ran = syncsvc(db_url, "run", "--until-idle", check=False)
    assert ran.returncode == 3, ran.stderr
    assert "memos" in ran.stderr and "held for the test" in ran.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        after = conn.execute(vectors).fetchall()
        waiting = conn.execute(
            "SELECT count(*) FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = q.target_id "
            "WHERE t.name = 'memos' AND q.state = 'pending'"
        ).fetchone()
    assert len(before) == len(after) == 20
    # the healthy target's edits were embedded
    assert all(old[1] != new[1] for old, new in zip(before, after, strict=True))
    assert waiting == (12,)  # nothing was dropped: the paused target's edits wait for the resume
