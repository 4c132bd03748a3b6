"""The command line as scripts drive it: stdout and stdin are pipes, never a terminal (except
where a test opens a pseudo-terminal on purpose), against a real database."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import psycopg

from syncsvc.capture import targets
from syncsvc.db.database import aconnect
from tests.helpers import fast_settings, queue_empty, running_daemon, wait_for
from tests.test_cli import setup_table, syncsvc


def two_targets(url: str) -> None:
    """``notes`` and a healthy second target ``other`` on its own table, both embedded. Set
    up through the Python API (what ``target add`` and ``run --until-idle`` call), so each
    test spends its processes on the commands it is about."""
    setup_table(url, 5)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE other (id int PRIMARY KEY, title text, body text)")
        conn.execute(
            "INSERT INTO other SELECT i, 'other ' || i, 'words' FROM generate_series(1, 4) i"
        )
    asyncio.run(_add_and_embed(url, ("notes", "other")))


async def _add_and_embed(url: str, names: tuple[str, ...]) -> None:
    settings = fast_settings()
    async with await aconnect(url) as conn:
        for name in names:
            spec = targets.TargetSpec(
                name=name,
                table=name,
                columns=("title", "body"),
                model="local-hash",
                provider="local-hash",
                dimensions=64,
            )
            await targets.add_target(conn, settings, spec)
        async with running_daemon(url, settings):
            await wait_for(lambda: queue_empty(conn), timeout=60)


def vectors(url: str, view: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM syncsvc.{view}").fetchone()
    assert row is not None
    return int(row[0])


def test_piped_tables_are_whole(db_url: str, tmp_path: Path) -> None:
    two_targets(db_url)
    status = syncsvc(db_url, "status").stdout
    header = next(line for line in status.splitlines() if "target" in line)
    for word in ("target", "embedded", "pending", "in flight", "active generation"):
        assert word in header, status
    assert "…" not in status
    rows = [line for line in status.splitlines() if " notes " in line or " other " in line]
    assert len(rows) == 2, status  # one line per target, nothing wrapped onto a second line

    long_dir = tmp_path / ("a-long-state-directory-name-" * 6) / "state"
    env_run = subprocess.run(
        [sys.executable, "-m", "syncsvc", "config", "show"],
        env={**os.environ, "SYNCSVC_DATABASE_URL": db_url, "SYNCSVC_STATE_DIR": str(long_dir)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert env_run.returncode == 0, env_run.stderr
    line = next(x for x in env_run.stdout.splitlines() if "state_dir" in x)
    assert str(long_dir) in line, env_run.stdout
    assert "…" not in env_run.stdout


# Every command that prints data, with --json; each must print parseable JSON.
DATA_COMMANDS = [
    ["status"],
    ["target", "list"],
    ["target", "check", "notes"],
    ["config", "show"],
    ["failed", "list"],
    ["jobs", "list"],
    ["generation", "list", "notes"],
    ["index", "list"],
    ["query-cache", "stats"],
    ["grant", "list"],
    ["search", "notes", "note 1"],
]


def test_every_data_command_takes_json(db_url: str) -> None:
    two_targets(db_url)
    # Side by side (they only read): each a process of its own with stdout a pipe.
    env = {**os.environ, "SYNCSVC_DATABASE_URL": db_url}
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "syncsvc", *command, "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for command in DATA_COMMANDS
    ]
    for command, process in zip(DATA_COMMANDS, running, strict=True):
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, (command, err)
        json.loads(out)  # raises on anything but one JSON document
    check = json.loads(syncsvc(db_url, "target", "check", "notes", "--json").stdout)
    assert (check["target"], check["ok"], check["problems"]) == ("notes", True, [])

    job = json.loads(
        syncsvc(
            db_url, "reembed", "notes", "--model", "local-hash", "--dimensions", "128", "--json"
        ).stdout
    )
    job_id = str(job["id"] if "id" in job else job["job"]["id"])
    syncsvc(db_url, "jobs", "cancel", job_id)  # no terminal: proceeds without asking
    lines = syncsvc(db_url, "jobs", "watch", job_id, "--json").stdout.splitlines()
    assert lines and all(json.loads(x)["state"] == "cancelled" for x in lines)
    # Piped without --json: progress lines, not silence.
    plain = syncsvc(db_url, "jobs", "watch", job_id).stdout
    assert f"job {job_id} notes" in plain and "cancelled" in plain
    assert vectors(db_url, "other_embeddings") == 4


def test_pk_is_one_shape_in_failed_list_and_search(db_url: str) -> None:
    two_targets(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO syncsvc.queue (target_id, pk, state, attempts, last_error) "
            "SELECT id, '[2]', 'failed', 6, '400 bad input' FROM syncsvc.targets "
            "WHERE name = 'notes'"
        )
    failed = json.loads(syncsvc(db_url, "failed", "list", "--json").stdout)
    assert [(r["target"], r["pk"]) for r in failed] == [("notes", {"id": 2})]
    hits = json.loads(syncsvc(db_url, "search", "notes", "note 2", "--json").stdout)
    assert hits and all(set(h["pk"]) == set(failed[0]["pk"]) for h in hits)
    assert {"id": 2} in [h["pk"] for h in hits]


ADD_NOTES = ["target", "add", "notes", "--table", "notes", "--columns", "body", "--provider"]
ADD_NOTES += ["local-hash", "--dimensions", "64"]


def test_json_logs_every_stderr_line(db_url: str, tmp_path: Path) -> None:
    setup_table(db_url, 3)
    config = tmp_path / "配置.toml"  # the banner names it, non-ASCII as is
    config.write_text("")
    env = {**os.environ, "SYNCSVC_DATABASE_URL": db_url, "SYNCSVC_CONFIG": str(config)}
    runs = [
        ADD_NOTES,
        ["run", "--until-idle"],
        ["status"],
        ["search", "nosuch", "x"],  # an error, too
    ]
    messages = []
    for args in runs:
        result = subprocess.run(
            [sys.executable, "-m", "syncsvc", "--log-format", "json", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = result.stderr.splitlines()
        assert lines, args
        for line in lines:
            messages.append(json.loads(line)["message"])
            assert "\\u" not in line, line
    assert any(m.startswith("using database") and "配置.toml" in m for m in messages), messages
    assert any("no target named 'nosuch'" in m for m in messages), messages

    # A failure before any setting is read (a missing config file) is a JSON line, too.
    env["SYNCSVC_CONFIG"] = str(tmp_path / "缺失.toml")
    missing = subprocess.run(
        [sys.executable, "-m", "syncsvc", "--log-format", "json", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    (line,) = missing.stderr.splitlines()
    assert "缺失.toml" in json.loads(line)["message"]


def test_missing_api_key_is_one_line_naming_the_variable(db_url: str) -> None:
    two_targets(db_url)
    env = {
        **os.environ,
        "SYNCSVC_DATABASE_URL": db_url,
        "SYNCSVC_PROVIDERS__DASHSCOPE__PROFILE": "dashscope-intl",
        "SYNCSVC_PROVIDERS__DASHSCOPE__API_KEY_ENV": "SYNCSVC_TEST_NO_SUCH_KEY",
    }
    env.pop("SYNCSVC_TEST_NO_SUCH_KEY", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncsvc", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE paid (id int PRIMARY KEY, title text, body text)")
        conn.execute("INSERT INTO paid VALUES (1, 'a', 'b')")
    add = ["target", "add", "paid", "--table", "paid", "--columns", "title,body"]
    added = run(*add, "--provider", "dashscope", "--model", "text-embedding-v4")
    assert added.returncode == 0, added.stderr
    result = run("search", "paid", "hello")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if not line.startswith("using ")]
    assert len(errors) == 1, result.stderr
    assert "SYNCSVC_TEST_NO_SUCH_KEY" in errors[0]
    assert "Provider(" not in result.stderr and "Traceback" not in result.stderr
    healthy = json.loads(syncsvc(db_url, "search", "other", "other 1", "--json").stdout)
    assert healthy


def under_terminal(url: str, answer: bytes, *args: str) -> subprocess.CompletedProcess[str]:
    """``syncsvc ARGS`` with a pseudo-terminal on stdin, answering ``answer``."""
    primary, secondary = pty.openpty()
    try:
        os.write(primary, answer)
        return subprocess.run(
            [sys.executable, "-m", "syncsvc", *args],
            env={**os.environ, "SYNCSVC_DATABASE_URL": url},
            stdin=secondary,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        os.close(secondary)
        os.close(primary)


def target_names(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT name FROM syncsvc.targets ORDER BY name")]


def test_target_remove_asks_on_a_terminal(db_url: str) -> None:
    two_targets(db_url)
    declined = under_terminal(db_url, b"n\n", "target", "remove", "notes")
    assert declined.returncode == 1, declined.stderr
    assert "remove target notes" in declined.stderr
    assert target_names(db_url) == ["notes", "other"]
    assert vectors(db_url, "notes_embeddings") == 5

    removed = under_terminal(db_url, b"", "target", "remove", "notes", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "remove target notes" not in removed.stderr  # --yes: no question
    assert target_names(db_url) == ["other"]
    assert vectors(db_url, "other_embeddings") == 4
    with psycopg.connect(db_url) as conn:
        triggers = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'other'::regclass")
        assert triggers.fetchone() != (0,)


def test_jobs_cancel_and_generation_drop_ask_on_a_terminal(db_url: str) -> None:
    two_targets(db_url)
    reembed = ["reembed", "notes", "--model", "local-hash", "--dimensions", "128", "--json"]
    job = json.loads(syncsvc(db_url, *reembed).stdout)
    job_id = str(job["id"] if "id" in job else job["job"]["id"])

    def state() -> str:
        jobs = json.loads(syncsvc(db_url, "jobs", "list", "--json").stdout)
        return str(next(j["state"] for j in jobs if str(j["id"]) == job_id))

    declined = under_terminal(db_url, b"n\n", "jobs", "cancel", job_id)
    assert declined.returncode == 1 and f"cancel job {job_id}" in declined.stderr
    assert state() != "cancelled"
    assert under_terminal(db_url, b"y\n", "jobs", "cancel", job_id).returncode == 0
    assert state() == "cancelled"

    generations = json.loads(syncsvc(db_url, "generation", "list", "notes", "--json").stdout)
    assert len(generations) == 2
    newest = str(max(g["id"] for g in generations))
    declined = under_terminal(db_url, b"n\n", "generation", "drop", "notes", newest)
    assert declined.returncode == 1
    assert len(json.loads(syncsvc(db_url, "generation", "list", "notes", "--json").stdout)) == 2
    dropped = under_terminal(db_url, b"", "generation", "drop", "notes", newest, "--yes")
    assert dropped.returncode == 0, dropped.stderr
    assert len(json.loads(syncsvc(db_url, "generation", "list", "notes", "--json").stdout)) == 1
    assert vectors(db_url, "notes_embeddings") == 5
    assert vectors(db_url, "other_embeddings") == 4
