"""Deployment as operators run it: replicas that never migrate, a migration that runs once, and
the compose trial's one-shot setup, run for real against the suite's own server."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import psycopg
import yaml
from packaging.utils import canonicalize_name

from syncsvc.ops import migrate

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


def _kind(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d and d["kind"] == kind]
    assert len(found) == 1, f"{name}: expected one {kind}"
    return found[0]


def _run(
    url: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "syncsvc", *args],
        # COLUMNS: rich wraps at 80 columns when not on a terminal.
        env={**os.environ, "SYNCSVC_DATABASE_URL": url, "COLUMNS": "400", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kubernetes_replicas_never_migrate_a_job_does() -> None:
    deployment = _kind("deployment.yaml", "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["run", "--no-migrate"]
    job = _kind("migrate-job.yaml", "Job")
    spec = job["spec"]["template"]["spec"]
    (migrator,) = spec["containers"]
    assert migrator["args"] == ["migrate"]
    assert migrator["image"] == container["image"]
    assert spec["restartPolicy"] == "Never"
    database = {e["name"]: e for e in container["env"]}["SYNCSVC_DATABASE_URL"]
    assert {e["name"]: e for e in migrator["env"]}["SYNCSVC_DATABASE_URL"] == database
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "migrate-job.yaml" in kustomization["resources"]


def test_run_no_migrate_refuses_a_schema_that_is_not_current(
    empty_db_url: str, db_url: str
) -> None:
    refused = _run(empty_db_url, "run", "--no-migrate", "--until-idle")
    assert refused.returncode == 1, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "run 'syncsvc migrate'" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr
    with psycopg.connect(empty_db_url) as conn:  # nothing was created
        found = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'syncsvc'")
        assert found.fetchone() == (0,)
    # One release behind: refused too, and left as it is.
    migrate.downgrade(db_url, "0012")
    missing = migrate.pending(db_url)
    assert "0013" in missing
    behind = _run(db_url, "run", "--no-migrate", "--until-idle")
    assert behind.returncode == 1, behind.stderr
    assert f"{len(missing)} revision(s) behind" in behind.stderr, behind.stderr
    assert migrate.current(db_url) == ["0012"]
    migrate.upgrade(db_url)
    ran = _run(db_url, "run", "--no-migrate", "--until-idle")
    assert ran.returncode == 0, ran.stderr
    assert migrate.pending(db_url) == []


def test_compose_setup_registers_its_target_once(empty_db_url: str, tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "ports" not in services["db"]  # no clash with a PostgreSQL on the host's 5432
    daemon = services["syncsvc"]
    assert daemon["command"] == ["run", "--no-migrate"]
    assert daemon["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    setup = services["setup"]
    assert setup["entrypoint"] == ["sh", "-ec"]
    # What compose runs, after its own interpolation ($$ is a literal $).
    script = setup["command"][0].replace("$$", "$")
    config = tmp_path / "syncsvc.toml"
    config.write_text(compose["configs"]["syncsvc_toml"]["content"])
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SYNCSVC_DATABASE_URL": empty_db_url,
        "SYNCSVC_CONFIG": str(config),
        "COLUMNS": "400",
    }
    for _ in range(2):  # `docker compose up` again must not fail on the existing target
        done = subprocess.run(
            ["sh", "-ec", script], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
    with psycopg.connect(empty_db_url) as conn:
        targets = conn.execute(
            "SELECT t.name, g.model, g.dimensions, g.state FROM syncsvc.targets t "
            "JOIN syncsvc.generations g ON g.target_id = t.id"
        ).fetchall()
        assert targets == [("articles", "text-embedding-v4", 1024, "active")]
        assert conn.execute("SELECT count(*) FROM public.articles").fetchone() == (3,)
    assert migrate.pending(empty_db_url) == []


def _pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (DEPLOY / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def test_the_image_ships_what_the_suite_ran_with() -> None:
    """Same Python as CI, every dependency pinned, and the pins are what this run installed."""
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    pythons = set(re.findall(r"^FROM python:(\d+\.\d+)-slim\b", dockerfile, re.MULTILINE))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pythons == {project["tool"]["mypy"]["python_version"]}
    if os.environ.get("CI"):
        assert pythons == {f"{sys.version_info.major}.{sys.version_info.minor}"}
    assert re.search(r"pip install -c constraints\.txt \.", dockerfile)
    assert "-c deploy/constraints.txt" in (ROOT / "scripts" / "test").read_text()
    pins = _pins()
    for requirement in project["project"]["dependencies"]:
        name = canonicalize_name(re.split(r"[\s<>=!;\[~]", requirement, maxsplit=1)[0])
        assert name in pins, f"{name} is not pinned in deploy/constraints.txt"
        assert metadata.version(name) == pins[name], name


def test_the_documentation_ships_in_the_package(tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "syncsvc", "docs"], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    pages = listed.stdout.split()
    assert pages == sorted(p.stem for p in (ROOT / "docs").glob("*.md"))
    page = subprocess.run(
        [sys.executable, "-m", "syncsvc", "docs", "operations"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert page.stdout.rstrip("\n") == (ROOT / "docs" / "operations.md").read_text().rstrip("\n")
    unknown = subprocess.run(
        [sys.executable, "-m", "syncsvc", "docs", "nope"], capture_output=True, text=True
    )
    assert unknown.returncode == 1 and "pages: " in unknown.stderr
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "docs/*.md" in project["tool"]["setuptools"]["package-data"]["syncsvc"]
    unit = (DEPLOY / "systemd" / "syncsvc.service").read_text()
    # What the unit says to install and read is what exists.
    assert "syncsvc docs operations" in unit and "Documentation=file://" not in unit
    assert "pip install -c deploy/constraints.txt ." in unit
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")


def test_the_wheel_ships_the_admin_pages_templates(tmp_path: Path) -> None:
    """The admin page renders from ``syncsvc/web/templates``: an installed wheel needs them."""
    import zipfile

    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    built = subprocess.run(
        [*pip, "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("syncsvc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"syncsvc/web/templates/{p.name}" for p in (ROOT / "syncsvc/web/templates").iterdir()
    }
    assert shipped and shipped <= names, sorted(shipped - names)
