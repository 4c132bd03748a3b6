"""DDL on a tracked table never breaks the application, pauses only that target with the cause,
and is repaired in place. Every test keeps a healthy second target (``notes``) and proves it
keeps being embedded while ``docs`` is broken."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import psycopg
import pytest
from typer.testing import CliRunner

from syncsvc.capture import drift
from syncsvc.core.models import PROVIDER_PAUSE
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.observe import status
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import Deployment
from tests.helpers import expected, fast_settings, running_daemon, scalar, text_targets, wait_for

DIMS = 64


async def _setup(conn: AsyncConn) -> None:
    await text_targets(conn, rows=10, title="title ", body="body ", dimensions=DIMS)


async def _vector(conn: AsyncConn, view: str, pk: int) -> np.ndarray | None:
    cur = await conn.execute(
        f"SELECT embedding FROM syncsvc.{view}_embeddings WHERE id = %s", (pk,)
    )
    row = await cur.fetchone()
    return None if row is None else row["embedding"].to_numpy()


async def _is(conn: AsyncConn, view: str, pk: int, text: str) -> bool:
    stored = await _vector(conn, view, pk)
    return stored is not None and bool(np.allclose(stored, expected(text, DIMS), atol=1e-6))


async def _paused(conn: AsyncConn, name: str) -> str | None:
    return (await get_target(conn, name)).paused_reason


async def _healthy_neighbour(conn: AsyncConn, writer: psycopg.Connection[Any], text: str) -> None:
    """``notes`` is embedded within seconds while ``docs`` is broken."""
    writer.execute("UPDATE notes SET body = %s WHERE id = 1", (text,))
    await wait_for(lambda: _is(conn, "notes", 1, f"title 1\n\n{text}"), timeout=10)
    assert await _paused(conn, "notes") is None


def cli(url: str, *args: str) -> tuple[int, str]:
    from syncsvc.cli import app

    result = CliRunner().invoke(app, ["--database-url", url, *args])
    return result.exit_code, " ".join(result.output.split())


async def test_renamed_column_never_fails_the_application_and_is_repaired(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    provider = LocalHashProvider()
    async with running_daemon(deployment.owner, provider=provider):
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"))
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            await conn.execute("ALTER TABLE docs RENAME COLUMN body TO content")
            # The application's own statements, as the writer role, all succeed.
            writer.execute("UPDATE docs SET content = 'renamed and edited' WHERE id = 2")
            writer.execute("INSERT INTO docs VALUES (11, 'title 11', 'new row')")
            writer.execute("DELETE FROM docs WHERE id = 3")
            await wait_for(lambda: _paused(conn, "docs"), timeout=10)
            reason = await _paused(conn, "docs")
            assert reason is not None and "body" in reason and "target repair docs" in reason
            await _healthy_neighbour(conn, writer, "edited while docs is broken")

            code, out = await asyncio.to_thread(cli, deployment.owner, "target", "check", "docs")
            assert code == 1 and "column body no longer exists in public.docs" in out
            with pytest.raises(Exception, match="--columns"):
                await drift.repair(conn, "docs")
            before = provider.inputs
            code, out = await asyncio.to_thread(
                cli,
                deployment.owner,
                "target",
                "repair",
                "docs",
                "--columns",
                "title,content",
                "--template",
                r"{title}\n\n{content}",
            )
            assert code == 0, out
            await wait_for(lambda: _is(conn, "docs", 2, "title 2\n\nrenamed and edited"))
            await wait_for(lambda: _is(conn, "docs", 11, "title 11\n\nnew row"))
            await wait_for(lambda: _vector_gone(conn, 3))
            # Only the two rows whose text changed were embedded again.
            assert provider.inputs - before == 2
            assert await _paused(conn, "docs") is None
            writer.execute("UPDATE docs SET content = 'after the repair' WHERE id = 4")
            await wait_for(lambda: _is(conn, "docs", 4, "title 4\n\nafter the repair"))
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.capture_errors") == 0


async def _vector_gone(conn: AsyncConn, pk: int) -> bool:
    return await _vector(conn, "docs", pk) is None


async def test_dropped_column_never_fails_the_application(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"))
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            await conn.execute("ALTER TABLE docs DROP COLUMN body")
            writer.execute("UPDATE docs SET title = 'still works' WHERE id = 2")
            writer.execute("INSERT INTO docs VALUES (11, 'inserted')")
            await wait_for(lambda: _paused(conn, "docs"), timeout=10)
            await _healthy_neighbour(conn, writer, "neighbour still embedded")
    assert await scalar(conn, "SELECT count(*) FROM docs") == 11


async def test_key_that_no_longer_casts_pauses_only_its_target(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"))
        await conn.execute("ALTER TABLE docs ALTER COLUMN id TYPE text")
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            writer.execute("INSERT INTO docs VALUES ('x9', 'title x9', 'a text key')")
            await wait_for(lambda: _paused(conn, "docs"), timeout=10)
            reason = await _paused(conn, "docs")
            assert reason == (
                "key column id of public.docs is now text, was integer "
                "(then 'syncsvc target repair docs')"
            )
            await _healthy_neighbour(conn, writer, "not held up by docs")
    # The entry is kept, with the error and an attempt counted, for after the fix.
    cur = await conn.execute("SELECT pk, state, attempts, last_error FROM syncsvc.queue")
    rows = await cur.fetchall()
    assert [(r["pk"], r["state"], r["attempts"]) for r in rows] == [(["x9"], "pending", 1)]
    assert rows[0]["last_error"] == reason
    code, out = await asyncio.to_thread(cli, deployment.owner, "target", "check", "docs")
    assert code == 1 and "key column id of public.docs is now text, was integer" in out


async def test_dropped_table_leaves_status_startup_and_neighbours_working(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    await conn.execute("INSERT INTO docs VALUES (11, 'pending', 'row')")
    await conn.execute("DROP TABLE docs")
    shown = {s.target: s for s in await status.collect(conn)}
    assert shown["notes"].rows == 10 and shown["notes"].paused_reason is None
    reason = shown["docs"].paused_reason
    assert reason is not None and 'relation "public.docs" does not exist' in reason
    code, out = await asyncio.to_thread(cli, deployment.owner, "status", "--json")
    assert code == 0 and '"notes"' in out
    # The admin page and /metrics read the same status: they show it, they do not fail.
    from syncsvc.observe import metrics
    from syncsvc.web import admin

    page = admin.render(await admin.gather(conn, []))
    assert "does not exist" in page  # the reason, in the docs row
    await metrics.refresh(conn)
    assert (
        metrics.REGISTRY.get_sample_value("syncsvc_target_source_rows", {"target": "notes"}) == 10
    )
    assert metrics.REGISTRY.get_sample_value("syncsvc_target_paused", {"target": "docs"}) == 1
    # A daemon starts (its first sweep pauses docs) and embeds notes.
    async with running_daemon(deployment.owner):
        await wait_for(lambda: _is(conn, "notes", 10, "title 10\n\nbody 10"))
        await wait_for(lambda: _paused(conn, "docs"), timeout=10)
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            await _healthy_neighbour(conn, writer, "after the drop")


async def test_provider_unknown_to_the_daemon_pauses_only_its_target(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    settings = fast_settings()
    from syncsvc.providers.registry import build_provider

    def factory(name: str) -> Any:
        return build_provider("nowhere" if name != "local-hash" else name, settings)

    await conn.execute(
        "UPDATE syncsvc.generations SET provider = 'elsewhere' "
        "WHERE target_id = (SELECT id FROM syncsvc.targets WHERE name = 'docs')"
    )
    from syncsvc.daemon.process import Daemon

    daemon = Daemon(settings, deployment.owner, provider_factory=factory)
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.started.wait(), 30)
        await wait_for(lambda: _paused(conn, "docs"), timeout=10)
        reason = await _paused(conn, "docs")
        assert reason is not None and "unknown provider 'nowhere'" in reason
        await wait_for(lambda: _is(conn, "notes", 10, "title 10\n\nbody 10"))
        assert (
            await scalar(
                conn,
                "SELECT count(*) FROM syncsvc.queue q JOIN syncsvc.targets t ON t.id = "
                "q.target_id WHERE t.name = 'docs' AND q.state = 'pending'",
            )
            == 10
        )
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


async def test_pause_and_resume_from_cli_and_sql(conn: AsyncConn, deployment: Deployment) -> None:
    await _setup(conn)
    code, out = await asyncio.to_thread(
        cli, deployment.owner, "target", "pause", "docs", "--reason", "maintenance"
    )
    assert code == 0 and await _paused(conn, "docs") == "maintenance"
    async with running_daemon(deployment.owner):
        await wait_for(lambda: _is(conn, "notes", 10, "title 10\n\nbody 10"))
        await asyncio.sleep(0.5)
        assert await _vector(conn, "docs", 10) is None
        await conn.execute("SELECT syncsvc.resume_target('docs')")
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"), timeout=10)
    code, out = await asyncio.to_thread(cli, deployment.owner, "target", "resume", "nope")
    assert code == 1 and "no target named 'nope'" in out


async def test_a_job_of_a_paused_target_says_it_is_blocked(conn: AsyncConn) -> None:
    from syncsvc import jobs

    await _setup(conn)
    job = await jobs.request_reembed(
        conn, fast_settings(), "docs", model="local-hash", dimensions=128
    )
    await drift.pause(conn, "docs", "provider refused requests: 401 InvalidApiKey")
    shown = await jobs.get_job(conn, job.id)
    assert shown.blocked == "blocked: target paused (provider refused requests: 401 InvalidApiKey)"
    assert shown.eta_seconds is None and shown.as_dict()["blocked"] == shown.blocked
    await drift.resume(conn, "docs")
    assert (await jobs.get_job(conn, job.id)).blocked is None


class _KeyProvider(LocalHashProvider):
    """Refuses every request with 401 until the operator 'fixes the key'."""

    def __init__(self) -> None:
        super().__init__()
        self.revoked = True

    async def embed(self, request: Any) -> Any:
        from syncsvc.embed.provider import ErrorKind, ProviderError

        if self.revoked:
            raise ProviderError(
                ErrorKind.AUTH, "Invalid API-key provided.", code="InvalidApiKey", status=401
            )
        return await super().embed(request)


async def test_a_target_paused_by_the_provider_resumes_once_the_key_works(
    conn: AsyncConn, deployment: Deployment
) -> None:
    from syncsvc.daemon import probe

    await _setup(conn)
    provider = _KeyProvider()
    async with running_daemon(deployment.owner, provider=provider) as daemon:
        await wait_for(lambda: _paused(conn, "docs"), timeout=10)
        reason = await _paused(conn, "docs")
        assert reason is not None and reason.startswith(PROVIDER_PAUSE)
        assert await probe.probe_once(daemon) == []  # still refused: stays paused
        assert await _paused(conn, "docs") == reason
        provider.revoked = False  # the operator fixed the key; nothing else
        assert sorted(await probe.probe_once(daemon)) == ["docs", "notes"]
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"), timeout=10)
        await wait_for(lambda: _is(conn, "notes", 10, "title 10\n\nbody 10"), timeout=10)


async def test_renamed_table_pauses_its_target_and_never_fails_the_application(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"))
        await conn.execute("ALTER TABLE docs RENAME TO papers")
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            writer.execute("UPDATE papers SET body = 'edited after the rename' WHERE id = 2")
            writer.execute("INSERT INTO papers VALUES (11, 'title 11', 'new')")
            await wait_for(lambda: _paused(conn, "docs"), timeout=10)
            reason = await _paused(conn, "docs")
            assert reason is not None and "table public.docs no longer exists" in reason
            await _healthy_neighbour(conn, writer, "after the rename")


async def test_changed_type_of_an_embedded_column_keeps_capturing(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: _is(conn, "docs", 10, "title 10\n\nbody 10"))
        await conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE varchar(100)")
        with psycopg.connect(deployment.writer, autocommit=True) as writer:
            writer.execute("UPDATE docs SET body = 'a varchar now' WHERE id = 2")
            await wait_for(lambda: _is(conn, "docs", 2, "title 2\n\na varchar now"))
            await conn.execute("ALTER TABLE docs ALTER COLUMN body TYPE integer USING length(body)")
            writer.execute("UPDATE docs SET body = 42 WHERE id = 3")
            await wait_for(lambda: _is(conn, "docs", 3, "title 3\n\n42"))
            await _healthy_neighbour(conn, writer, "neighbour too")
    assert await _paused(conn, "docs") is None
    code, out = await asyncio.to_thread(cli, deployment.owner, "target", "check", "docs")
    assert code == 1 and "column body of public.docs is now integer" in out


def test_a_repeated_error_logs_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from syncsvc.observe.errorlog import RepeatedErrors

    errors = RepeatedErrors(interval_seconds=60)
    boom = psycopg.OperationalError("connection refused")
    with caplog.at_level("ERROR", logger="syncsvc.observe.errorlog"):
        logged = [errors.report("database unavailable; retrying", exc=boom) for _ in range(50)]
        assert logged == [True] + [False] * 49
        errors.report("another loop failed", exc=boom)
    lines = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert lines == [
        "database unavailable; retrying: OperationalError: connection refused",
        "another loop failed: OperationalError: connection refused",
    ]
    assert errors.recent() == [
        "database unavailable; retrying: OperationalError: connection refused",
        "another loop failed: OperationalError: connection refused",
    ]
    errors.interval = 0  # the next one after the interval says how many it swallowed
    errors.report("database unavailable; retrying", exc=boom)
    assert caplog.records[-1].getMessage().endswith("(repeated 49 more times)")
