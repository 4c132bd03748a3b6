"""Every command fails in one or two lines, with no traceback, on each way a setup goes wrong:
no pgvector, no server, no schema, a role without rights, a broken syncsvc.toml."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from syncsvc.cli import main
from syncsvc.core.errors import ConfigurationError
from tests.conftest import Cluster, Deployment

COMMANDS: list[list[str]] = [
    ["migrate"],
    ["run", "--until-idle"],
    ["status"],
    ["serve-admin", "--address", "127.0.0.1:0"],
    ["search", "docs", "some words"],
    ["reembed", "docs", "--model", "local-hash", "--dimensions", "64"],
    ["promote", "docs", "2"],
    ["failed", "list"],
    ["failed", "retry", "--target", "docs"],
    ["target", "add", "docs", "--table", "docs", "--columns", "title", "--provider", "local-hash"],
    ["target", "list"],
    ["target", "remove", "docs"],
    ["target", "pause", "docs"],
    ["target", "resume", "docs"],
    ["target", "check", "docs"],
    ["target", "repair", "docs"],
    ["index", "build", "docs"],
    ["index", "list"],
    ["index", "drop", "docs", "--generation", "1"],
    ["query-cache", "stats"],
    ["query-cache", "prune"],
    ["jobs", "list"],
    ["jobs", "watch", "1"],
    ["jobs", "pause", "1"],
    ["jobs", "resume", "1"],
    ["jobs", "cancel", "1"],
    ["generation", "list", "docs"],
    ["generation", "drop", "docs", "2"],
    ["grant", "search", "app_reader"],
    ["grant", "list"],
    ["revoke", "search", "app_reader"],
]

# These bring the schema up to date themselves (as the owner would want).
AUTO_MIGRATING = {"migrate", "run", "reembed", "target add"}

CASES = ["no-pgvector", "unreachable", "not-migrated", "no-privilege", "bad-toml", "bad-setting"]

EXPECTED = {
    "no-pgvector": "pgvector",
    "unreachable": "cannot connect to PostgreSQL",
    "not-migrated": "syncsvc migrate",
    "no-privilege": "syncsvc",
    "bad-toml": "syncsvc.toml is not valid TOML",
    "bad-setting": "invalid settings",
}


@pytest.fixture(scope="module")
def shared(cluster: Cluster) -> Iterator[tuple[Deployment, Deployment]]:
    """A migrated and a bare database shared by the module's cases: every case fails before it
    writes anything, and the bare one is checked afterwards to have stayed bare (a command that
    migrated where it should have refused would show there)."""
    migrated = cluster.deployment(f"cli_errors_{os.getpid()}")
    bare = cluster.deployment(f"cli_errors_bare_{os.getpid()}", migrated=False)
    yield migrated, bare
    try:
        with psycopg.connect(bare.admin) as conn:
            schema = conn.execute("SELECT to_regnamespace('syncsvc')").fetchone()
        assert schema == (None,), "a failing command created the syncsvc schema"
    finally:
        cluster.drop(migrated)
        cluster.drop(bare)


@pytest.fixture
def setup_case(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared: tuple[Deployment, Deployment],
) -> Iterator[str]:
    """The database URL of the broken setup named by the test's ``case``."""
    case = request.node.callspec.params["case"]
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at 80 columns when not on a terminal
    monkeypatch.setenv("SYNCSVC_CONFIG", str(tmp_path / "syncsvc.toml"))
    (tmp_path / "syncsvc.toml").write_text("")  # named by SYNCSVC_CONFIG, so it must exist
    monkeypatch.delenv("SYNCSVC_LOG_LEVEL", raising=False)
    if case == "no-pgvector":
        yield request.getfixturevalue("no_pgvector_url")
    elif case == "unreachable":
        yield request.getfixturevalue("unreachable_url")
    elif case == "not-migrated":
        yield shared[1].owner
    elif case == "no-privilege":
        yield shared[0].reader
    else:
        text = (
            "[worker\nconcurrency = 4\n"
            if case == "bad-toml"
            else "[worker]\nclaim_size = 'many'\n"
        )
        (tmp_path / "syncsvc.toml").write_text(text)
        yield shared[0].owner


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_fails_in_one_line(
    command: list[str], case: str, setup_case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    if case == "not-migrated" and (
        command[0] in AUTO_MIGRATING or " ".join(command[:2]) in AUTO_MIGRATING
    ):
        pytest.skip("this command migrates the schema first")
    with pytest.raises(SystemExit) as exit_info:
        main(["--database-url", setup_case, *command])
    out, err = capsys.readouterr()
    assert exit_info.value.code not in (0, None), out + err
    assert "Traceback" not in out + err
    # The one line saying which database and config file the command uses comes first.
    lines = [line for line in (out + err).splitlines() if line.strip()]
    if lines and lines[0].startswith("using "):
        lines = lines[1:]
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith("error: "), lines
    assert EXPECTED[case] in err, err


def test_debug_keeps_the_traceback(unreachable_url: str) -> None:
    with pytest.raises(ConfigurationError, match="cannot connect"):
        main(["--database-url", unreachable_url, "--log-level", "debug", "status"])
    assert os.environ.get("SYNCSVC_LOG_LEVEL") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[worker\n", "is not valid TOML: Expected ']'"),
        ("[worker]\nclaim_size = 'many'\n", "worker.claim_size: Input should be a valid integer"),
        (
            "[worker]\nclaim_sise = 8\n",
            "worker.claim_sise: unknown setting (did you mean 'claim_size'?)",
        ),
        (
            "[providers.ds]\nprofile = 'dashscope-intl'\nconcurency = 3\n",
            "providers.ds.concurency: unknown setting (did you mean 'concurrency'?)",
        ),
    ],
)
def test_a_broken_config_file_is_one_line_from_a_real_process(
    tmp_path: Path, db_url: str, text: str, message: str
) -> None:
    config = tmp_path / "syncsvc.toml"
    config.write_text(text)
    env = {**os.environ, "SYNCSVC_CONFIG": str(config), "COLUMNS": "400"}
    result = subprocess.run(
        [sys.executable, "-m", "syncsvc", "--database-url", db_url, "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]  # one line
    assert result.stderr.startswith(
        f"error: invalid settings ({config}"
    ) or result.stderr.startswith(f"error: {config} ")
    assert message in result.stderr
