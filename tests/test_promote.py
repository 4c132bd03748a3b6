"""Promotion, coverage, generation drop, and the jobs/promote/generation CLI."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from typer.testing import CliRunner

from syncsvc import jobs
from syncsvc.capture import targets
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import GenerationState
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.db.database import aconnect
from syncsvc.jobs import JobState
from syncsvc.providers.local import LocalHashProvider
from syncsvc.store import promote
from tests.helpers import queue_empty, running_daemon, scalar, wait_for
from tests.jobs_support import DIMS, job_settings, make_docs, vector_count


def cli(db_url: str, *args: str, code: int = 0) -> str:
    from syncsvc.cli import app

    result = CliRunner().invoke(app, ["--database-url", db_url, *args])
    assert result.exit_code == code, result.output
    # stderr says which database is used (and holds errors); rich wraps at the terminal width
    return " ".join((result.stdout if code == 0 else result.output).split())


async def run_cli(db_url: str, *args: str, code: int = 0) -> str:
    return await asyncio.to_thread(cli, db_url, *args, code=code)


async def test_promote_refuses_incomplete_then_switches_atomically(
    conn: AsyncConn, db_url: str
) -> None:
    await make_docs(conn, 50)
    job = await jobs.request_reembed(
        conn, job_settings(), "docs", model="local-hash", dimensions=64
    )
    target = await get_target(conn, "docs")
    building = next(g for g in target.generations if g.id == job.generation_id)
    measured = await promote.coverage(conn, target, building)
    assert (measured.rows, measured.current, measured.missing) == (50, 0, 50)
    with pytest.raises(ValidationError, match="incomplete: 0/50 rows current, 50 missing"):
        await promote.promote(conn, "docs", building.id)
    with pytest.raises(ValidationError, match="active generation"):
        await promote.drop_generation(conn, "docs", 1)

    async with running_daemon(db_url, job_settings()):
        await wait_for(lambda: _job_state(conn, job.id, JobState.COMPLETED))
        await wait_for(lambda: queue_empty(conn))
    # A search that started before the switch finishes on the old generation.
    async with await aconnect(db_url) as reader:
        await reader.execute("BEGIN")
        dims = "SELECT vector_dims(embedding) AS d FROM syncsvc.docs_embeddings LIMIT 1"
        assert await scalar(reader, dims) == DIMS
        promotion = asyncio.create_task(promote.promote(conn, "docs", building.id))
        await asyncio.sleep(0.3)
        assert not promotion.done()
        assert await scalar(reader, dims) == DIMS
        await reader.execute("COMMIT")
        done = await asyncio.wait_for(promotion, 10)
        assert await scalar(reader, dims) == 64
    assert done.previous is not None and done.previous.id == 1
    assert done.coverage.complete and done.coverage.current == 50
    target = await get_target(conn, "docs")
    states = {g.id: g.state for g in target.generations}
    assert states == {1: GenerationState.RETIRED, building.id: GenerationState.ACTIVE}
    assert await scalar(conn, "SELECT DISTINCT generation_id FROM syncsvc.docs_embeddings") == (
        building.id
    )
    # The old generation stays until dropped; then its table is gone.
    old = await promote.drop_generation(conn, "docs", 1)
    assert await scalar(conn, "SELECT to_regclass(%s) IS NULL", (f"syncsvc.{old.table_name}",))


async def test_force_promotes_incomplete_and_sweep_fills_it(conn: AsyncConn, db_url: str) -> None:
    await make_docs(conn, 30)
    job = await jobs.request_reembed(
        conn, job_settings(), "docs", model="local-hash", dimensions=64
    )
    done = await promote.promote(conn, "docs", job.generation_id, force=True)
    assert done.coverage.current == 0
    assert (await jobs.get_job(conn, job.id)).state is JobState.COMPLETED
    async with running_daemon(db_url, job_settings()):
        await wait_for(lambda: _vectors(conn, 30))


async def _vectors(conn: AsyncConn, n: int) -> bool:
    return bool(await vector_count(conn, "docs_embeddings") == n)


async def _job_state(conn: AsyncConn, job_id: int, state: JobState) -> bool:
    return (await jobs.get_job(conn, job_id)).state is state


async def test_changing_model_in_place_points_to_reembed(conn: AsyncConn) -> None:
    await make_docs(conn, 1)
    spec = targets.TargetSpec(
        name="docs", table="docs", columns=("title",), model="local-hash", dimensions=128
    )
    with pytest.raises(ValidationError, match="syncsvc reembed docs --model local-hash"):
        await targets.add_target(conn, job_settings(), spec)


async def test_cli_reembed_jobs_promote_generation(
    conn: AsyncConn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_docs(conn, 120)

    async def no_calls(self: LocalHashProvider, request: object) -> None:
        raise AssertionError("the dry run called the provider")

    # Dry run: numbers printed, nothing created, no API call.
    monkeypatch.setattr(LocalHashProvider, "embed", no_calls)
    out = await run_cli(
        db_url, "reembed", "docs", "--model", "local-hash", "--dimensions", "128", "--dry-run"
    )
    assert "120 rows" in out and "720 tokens" in out and "$0.0000" in out
    monkeypatch.undo()
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.generations") == 1

    out = await run_cli(
        db_url,
        "reembed",
        "docs",
        "--model",
        "local-hash",
        "--dimensions",
        "128",
        "--max-queued",
        "7",
    )
    assert "job 1 builds generation 2" in out
    job = await jobs.get_job(conn, 1)
    assert job.max_queued == 7 and job.state is JobState.PENDING
    await run_cli(db_url, "jobs", "pause", "1")
    assert (await jobs.get_job(conn, 1)).state is JobState.PAUSED
    listed: list[dict[str, Any]] = json.loads(await run_cli(db_url, "jobs", "list", "--json"))
    assert [(j["id"], j["state"], j["target"]) for j in listed] == [(1, "paused", "docs")]
    await run_cli(db_url, "jobs", "resume", "1")
    assert (await jobs.get_job(conn, 1)).state is JobState.PENDING  # never started yet
    out = await run_cli(db_url, "promote", "docs", "2", code=1)
    assert "incomplete" in out

    async with running_daemon(db_url, job_settings()):
        await wait_for(lambda: _job_state(conn, 1, JobState.COMPLETED))
    out = await run_cli(db_url, "jobs", "watch", "1", "--interval", "0.1")
    assert "completed" in out and "120/120" in out
    assert "docs" in await run_cli(db_url, "jobs", "list")
    out = await run_cli(db_url, "promote", "docs", "2")
    assert "now searches generation 2" in out
    generations = json.loads(await run_cli(db_url, "generation", "list", "docs", "--json"))
    assert [(g["id"], g["state"], g["missing"]) for g in generations] == [
        (1, "retired", 0),
        (2, "active", 0),
    ]
    assert "active generation" in await run_cli(db_url, "generation", "drop", "docs", "2", code=1)
    assert "dropped" in await run_cli(db_url, "generation", "drop", "docs", "1")

    # Cancel from the CLI: the generation is retired, or dropped with --drop.
    await run_cli(db_url, "reembed", "docs", "--model", "local-hash", "--dimensions", "64")
    out = await run_cli(db_url, "jobs", "cancel", "2", "--drop")
    assert "cancelled" in out
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.generations") == 1
    assert "job 9" in await run_cli(db_url, "jobs", "pause", "9", code=1)


async def test_reembed_back_to_a_retired_generation_reuses_it(conn: AsyncConn, db_url: str) -> None:
    await make_docs(conn, 100)
    provider = LocalHashProvider()
    settings = job_settings()
    async with running_daemon(db_url, settings, provider):
        job = await jobs.request_reembed(
            conn, settings, "docs", model="local-hash", dimensions=128, auto_promote=True
        )
        await wait_for(lambda: _job_state(conn, job.id, JobState.COMPLETED))
        await conn.execute("UPDATE docs SET body = 'changed since' WHERE id <= 5")
        await wait_for(lambda: queue_empty(conn))
        before = provider.inputs
        back = await jobs.request_reembed(
            conn, settings, "docs", model="local-hash", dimensions=DIMS, auto_promote=True
        )
        # The retired generation comes back: only the rows edited since are embedded again.
        assert back.generation_id == 1
        await wait_for(lambda: _job_state(conn, back.id, JobState.COMPLETED))
        await wait_for(lambda: queue_empty(conn))
    assert provider.inputs - before == 5
    target = await get_target(conn, "docs")
    assert target.active is not None and target.active.id == 1


async def test_a_failed_jobs_generation_is_failed_and_not_promoted_without_force(
    conn: AsyncConn,
) -> None:
    await make_docs(conn, 5)
    job = await jobs.request_reembed(
        conn, job_settings(), "docs", model="local-hash", dimensions=64
    )
    async with conn.transaction():
        await jobs.fail_job(conn, await jobs.get_job(conn, job.id), "the provider went away")
    target = await get_target(conn, "docs")
    states = {g.id: g.state for g in target.generations}
    assert states == {1: GenerationState.ACTIVE, job.generation_id: GenerationState.FAILED}
    with pytest.raises(ValidationError, match="belongs to a failed job"):
        await promote.promote(conn, "docs", job.generation_id)
    done = await promote.promote(conn, "docs", job.generation_id, force=True)
    assert done.generation.id == job.generation_id


async def test_a_complete_generation_left_unpromoted_is_warned_about(
    conn: AsyncConn, db_url: str
) -> None:
    from syncsvc.observe import metrics, status
    from syncsvc.web import admin

    await make_docs(conn, 20)
    job = await jobs.request_reembed(
        conn, job_settings(), "docs", model="local-hash", dimensions=64
    )
    async with running_daemon(db_url, job_settings()):
        await wait_for(lambda: _job_state(conn, job.id, JobState.COMPLETED))
        await wait_for(lambda: queue_empty(conn))
        await conn.execute("UPDATE docs SET body = 'a live edit' WHERE id = 1")
        await wait_for(lambda: queue_empty(conn))
    assert await status.unpromoted(conn, 3600) == []  # within the grace period
    [idle] = await status.unpromoted(conn, 0)
    assert (idle.target, idle.generation_id) == ("docs", job.generation_id)
    assert idle.tokens_per_day > 0 and "neither promoted nor dropped" in idle.warning()
    await metrics.refresh(conn)
    assert (
        metrics.REGISTRY.get_sample_value("syncsvc_unpromoted_generations", {"target": "docs"})
        is None
    )  # the default grace is an hour
    page = admin.render(await admin.gather(conn, [], unpromoted_grace_seconds=0))
    assert "neither promoted nor dropped" in page
    out = await run_cli(db_url, "status")
    assert "neither promoted" not in out
    await promote.promote(conn, "docs", job.generation_id)
    assert await status.unpromoted(conn, 0) == []
