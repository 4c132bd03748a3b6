"""Configuration that catches mistakes: each command says which database and config file it
uses, ``config show`` names every setting's source with secrets masked, the daemon never
falls back to the embedded database by accident, and ``target add`` never picks a provider
on a real database."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest


def syncsvc(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SYNCSVC_", "PG", "DASHSCOPE_")) or k == "PATH"
    }
    return subprocess.run(
        [sys.executable, "-m", "syncsvc", *args],
        env={**clean, "COLUMNS": "400", **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user}:{password}@{host}"


def test_config_show_names_each_source_and_masks_secrets(tmp_path: Path, db_url: str) -> None:
    (tmp_path / "syncsvc.toml").write_text(
        "[worker]\nclaim_size = 40\n\n[providers.ds]\nprofile = 'dashscope-intl'\n"
    )
    url = with_password(db_url, "s3cret-pw")
    env = {
        "SYNCSVC_WORKER__LEASE_SECONDS": "45",
        "DASHSCOPE_API_KEY": "sk-never-shown",
    }
    done = syncsvc("--database-url", url, "config", "show", "--json", cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    rows = {r["setting"]: (r["value"], r["source"]) for r in shown["settings"]}
    assert rows["worker.claim_size"] == (40, str(tmp_path / "syncsvc.toml"))
    assert rows["worker.lease_seconds"] == (45, "env SYNCSVC_WORKER__LEASE_SECONDS")
    assert rows["worker.poll_interval_seconds"][1] == "default"
    assert rows["database_url"] == (url.replace("s3cret-pw", "***"), "command line")
    assert rows["providers.ds.api key"] == ("set", "env DASHSCOPE_API_KEY")
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert "sk-never-shown" not in done.stdout + done.stderr
    assert shown["setup"] == (
        f"using database {url.replace('s3cret-pw', '***')}; config {tmp_path / 'syncsvc.toml'}"
    )


def test_every_command_says_once_which_database_and_config(tmp_path: Path, db_url: str) -> None:
    done = syncsvc("target", "list", cwd=tmp_path, env={"SYNCSVC_DATABASE_URL": db_url})
    assert done.returncode == 0, done.stderr
    announced = [line for line in done.stderr.splitlines() if line.startswith("using ")]
    assert announced == [
        f"using database {db_url}; no config file ({tmp_path / 'syncsvc.toml'} not found)"
    ]
    quiet = syncsvc("--log-level", "warning", "target", "list", cwd=tmp_path,
                    env={"SYNCSVC_DATABASE_URL": db_url})  # fmt: skip
    assert quiet.returncode == 0 and "using " not in quiet.stderr


def test_the_daemon_never_falls_back_to_the_embedded_database(tmp_path: Path) -> None:
    done = syncsvc("run", cwd=tmp_path, env={"SYNCSVC_STATE_DIR": str(tmp_path / "state")})
    assert done.returncode == 1
    assert done.stderr.startswith("error: no database configured for the daemon")
    assert "--embedded" in done.stderr
    assert not (tmp_path / "state").exists()  # nothing was started or created


def test_a_config_file_named_but_missing_is_an_error(tmp_path: Path, db_url: str) -> None:
    missing = tmp_path / "etc" / "syncsvc.toml"
    env = {"SYNCSVC_CONFIG": str(missing), "SYNCSVC_DATABASE_URL": db_url}
    done = syncsvc("status", cwd=tmp_path, env=env)
    assert done.returncode == 1
    assert done.stderr.strip() == f"error: config file {missing} (SYNCSVC_CONFIG) does not exist"


def test_target_add_on_a_real_database_requires_the_provider(tmp_path: Path, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    env = {"SYNCSVC_DATABASE_URL": db_url}
    done = syncsvc("target", "add", "notes", "--table", "notes", "--columns", "body",
                   cwd=tmp_path, env=env)  # fmt: skip
    assert done.returncode == 1
    assert "error: name the provider: --provider NAME (configured: local, local-hash)" in (
        done.stderr
    )
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM syncsvc.targets").fetchone() == (0,)
    named = syncsvc("target", "add", "notes", "--table", "notes", "--columns", "body",
                    "--provider", "local", "--json", cwd=tmp_path, env=env)  # fmt: skip
    assert named.returncode == 0, named.stderr
    added = json.loads(named.stdout)
    assert (added["provider"], added["model"], added["dimensions"]) == (
        "local",
        "wordllama-l2-supercat",
        256,
    )


@pytest.mark.timeout(180)
def test_embedded_status_and_stop(tmp_path: Path) -> None:
    env = {"SYNCSVC_STATE_DIR": str(tmp_path / "state")}

    def status() -> dict[str, object]:
        done = syncsvc("embedded", "status", "--json", cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout))

    assert status()["running"] is False
    started = syncsvc("migrate", cwd=tmp_path, env=env)  # no database: the embedded one
    assert started.returncode == 0, started.stderr
    assert "using the embedded PostgreSQL in" in started.stderr
    running = status()
    assert running["running"] is True
    # What it prints is enough to connect: the URL, and a psql command that works as shown.
    with psycopg.connect(str(running["url"])) as conn:
        assert conn.execute("SELECT count(*) FROM syncsvc.targets").fetchone() == (0,)
    psql = subprocess.run(
        [*shlex.split(str(running["psql"])), "-Atc", "SELECT current_database()"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert psql.stdout.strip() == "syncsvc", psql.stderr
    stopped = syncsvc("embedded", "stop", "--json", cwd=tmp_path, env=env)
    assert json.loads(stopped.stdout)["stopped"] is True
    assert status()["running"] is False
    again = syncsvc("embedded", "stop", cwd=tmp_path, env=env)
    assert "was not running" in again.stdout
    assert (tmp_path / "state" / "pgdata" / "PG_VERSION").exists()  # the data is kept
