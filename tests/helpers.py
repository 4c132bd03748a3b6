"""Test helpers: run a daemon in-process, wait for conditions, read vectors."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
from psycopg import sql

from syncsvc.core.settings import Settings, WorkerSettings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon.process import Daemon
from syncsvc.embed import lexical
from syncsvc.providers.local import LocalHashProvider


def fast_settings(**worker: Any) -> Settings:
    defaults: dict[str, Any] = {
        "poll_interval_seconds": 0.2,
        "lease_seconds": 10,
        "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 0.2,
        "shutdown_timeout_seconds": 5,
    }
    defaults.update(worker)
    return Settings(worker=WorkerSettings(**defaults))


@contextlib.asynccontextmanager
async def running_daemon(
    url: str,
    settings: Settings | None = None,
    provider: Any | None = None,
    provider_factory: Callable[[str], Any] | None = None,
) -> AsyncIterator[Daemon]:
    """A daemon running as a task, wired as ``syncsvc run`` wires it (metrics hooks, the
    scale-out coordinator); stopped (and its failure re-raised) on exit. Every provider name
    is ``provider`` (default: local-hash) unless ``provider_factory`` maps names itself."""
    from syncsvc.ops import wiring as operations

    local = provider or LocalHashProvider()
    daemon = Daemon(
        settings or fast_settings(),
        url,
        provider_factory=provider_factory or (lambda name: local),
    )
    operations.install(daemon)
    task = asyncio.create_task(daemon.run())
    started = asyncio.create_task(daemon.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    try:
        yield daemon
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 30.0, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


async def scalar(conn: AsyncConn, query: str, params: Any = None) -> Any:
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    assert row is not None
    return next(iter(row.values()))


async def queue_empty(conn: AsyncConn) -> bool:
    return bool(
        await scalar(
            conn,
            "SELECT NOT EXISTS (SELECT 1 FROM syncsvc.queue) "
            "AND NOT EXISTS (SELECT 1 FROM syncsvc.inbox)",
        )
    )


def expected(text: str, dims: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(lexical.embed(text, dims), dtype=np.float32)


async def text_targets(
    conn: AsyncConn,
    names: tuple[str, ...] = ("docs", "notes"),
    *,
    rows: int = 20,
    title: str = "{table} title ",
    body: str = "words of ",
    dimensions: int = 64,
    **spec: Any,
) -> None:
    """Tables ``(id int, title, body)`` of ``rows`` rows ('<title>i', '<body>i'), each a
    local-hash target: the one under test and its healthy neighbours."""
    from syncsvc.capture import targets

    for table in names:
        await conn.execute(
            sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, title text, body text)").format(
                sql.Identifier(table)
            )
        )
        await conn.execute(
            sql.SQL(
                "INSERT INTO {} SELECT i, %s || i, %s || i FROM generate_series(1, %s) i"
            ).format(sql.Identifier(table)),
            (title.format(table=table), body, rows),
        )
        target = targets.TargetSpec(
            name=table,
            table=table,
            columns=("title", "body"),
            model="local-hash",
            dimensions=dimensions,
            **spec,
        )
        await targets.add_target(conn, fast_settings(), target)


def spawn_daemon(
    url: str, env: dict[str, str] | None = None, **worker: object
) -> subprocess.Popen[bytes]:
    """``syncsvc run`` in a process of its own (for kill -9), with ``worker`` settings and
    any other ``env``."""
    env = {**os.environ, **(env or {}), "SYNCSVC_DATABASE_URL": url}
    env.update({f"SYNCSVC_WORKER__{k.upper()}": str(v) for k, v in worker.items()})
    return subprocess.Popen(
        [sys.executable, "-m", "syncsvc", "run"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
