"""Generations and jobs you can trust (issue 20, items 1-3): promote only what is complete,
jobs that finish despite a poison row, and a cancel that stops spending at once. Each test
keeps a healthy second target beside the one under test."""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

import pytest

from syncsvc import jobs
from syncsvc.api.client import AsyncClient
from syncsvc.core.errors import ValidationError
from syncsvc.core.models import GenerationState
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.daemon import actions
from syncsvc.db.catalog import get_target
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse
from syncsvc.jobs import BACKFILL_PRIORITY, JobState, backfill
from syncsvc.observe import status
from syncsvc.providers.local import LocalHashProvider
from syncsvc.providers.registry import build_provider
from syncsvc.simulator import SimulatorThread
from syncsvc.store import promote
from syncsvc.web import admin
from tests.helpers import queue_empty, running_daemon, scalar, text_targets, wait_for
from tests.jobs_support import job_settings, vector_count
from tests.simulator_fixtures import simulator_settings
from tests.test_promote import run_cli

SIM_MODEL = "text-embedding-v4"
SIM_DIMS = 512


def sim_job_settings(sim: SimulatorThread, **jobs_conf: Any) -> Settings:
    """Fast job settings with provider ``sim`` (DashScope on the simulator) configured."""
    return job_settings(**jobs_conf).model_copy(
        update={"providers": simulator_settings(sim, concurrency=2).providers}
    )


async def _initial_sync(conn: AsyncConn, db_url: str) -> None:
    async with running_daemon(db_url, job_settings()):
        await wait_for(lambda: queue_empty(conn))


async def _job(conn: AsyncConn, job_id: int) -> jobs.Job:
    return await jobs.get_job(conn, job_id)


async def _state(conn: AsyncConn, job_id: int, state: JobState) -> bool:
    return (await _job(conn, job_id)).state is state


async def _only_failed_left(conn: AsyncConn) -> bool:
    return bool(
        await scalar(
            conn,
            "SELECT NOT EXISTS (SELECT 1 FROM syncsvc.queue WHERE state <> 'failed') "
            "AND NOT EXISTS (SELECT 1 FROM syncsvc.inbox)",
        )
    )


async def _current_vectors(conn: AsyncConn, target: str, body: str) -> int:
    """Rows of ``target`` (a text_targets table) with this body whose vector in the active
    generation matches their current text."""
    return int(
        await scalar(
            conn,
            f"SELECT count(*) FROM syncsvc.{target}_embeddings e JOIN {target} s ON s.id = e.id "
            "WHERE s.body = %s AND e.content_hash = syncsvc.content_hash("
            "(SELECT key FROM syncsvc.generations g JOIN syncsvc.targets t ON t.id = g.target_id"
            " WHERE t.name = %s AND g.state = 'active'), concat(s.title, E'\\n\\n', s.body))",
            (body, target),
        )
    )


def _promote_buttons(page: str) -> int:
    return page.count('data-action="promote"')


# --- 1. promote means complete ---------------------------------------------------------------


async def test_rows_its_job_still_has_to_embed_never_count_as_done(
    conn: AsyncConn, db_url: str
) -> None:
    await text_targets(conn, ("docs", "notes"), rows=40)
    await _initial_sync(conn, db_url)
    settings = job_settings()
    notes_first = (await get_target(conn, "notes")).active
    assert notes_first is not None
    # The healthy neighbour: its re-embed runs to completion.
    healthy = await jobs.request_reembed(
        conn, settings, "notes", model="local-hash", dimensions=128
    )
    async with running_daemon(db_url, settings):
        await wait_for(lambda: _state(conn, healthy.id, JobState.COMPLETED))
        await wait_for(lambda: queue_empty(conn))

    # docs: the job has queued every row (no daemon embeds them): none is done.
    job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
    await backfill.JobRunner(settings).tick(conn)
    queued = await scalar(
        conn, "SELECT count(*) FROM syncsvc.queue WHERE priority = %s", (BACKFILL_PRIORITY,)
    )
    assert queued == 40
    target = await get_target(conn, "docs")
    building = next(g for g in target.generations if g.id == job.generation_id)
    measured = await promote.coverage(conn, target, building)
    assert (measured.rows, measured.current, measured.queued, measured.missing) == (40, 0, 0, 40)
    assert not measured.complete

    # Every surface refuses it with the one check: Python/CLI ...
    with pytest.raises(ValidationError, match="incomplete: 0/40 rows current, 40 missing"):
        await promote.promote(conn, "docs", building.id)
    out = await run_cli(db_url, "promote", "docs", str(building.id), code=1)
    assert "incomplete" in out and "40 missing" in out
    # ... (the healthy target's complete generation is promoted) ...
    promoted = json.loads(
        await run_cli(db_url, "promote", "notes", str(healthy.generation_id), "--json")
    )
    assert (promoted["dry_run"], promoted["missing"], promoted["failed"]) == (False, 0, 0)
    # ... the dry run refuses as the promote would ...
    refused_dry = await run_cli(
        db_url, "promote", "docs", str(building.id), "--dry-run", "--json", code=1
    )
    assert "40 missing" in refused_dry
    # ... SQL (a request carried out by the daemon's code) ...
    request = await scalar(conn, "SELECT syncsvc.promote('docs', %s)", (building.id,))
    await actions.carry_out(conn, settings)
    cur = await conn.execute("SELECT state, error FROM syncsvc.requests WHERE id = %s", (request,))
    row = await cur.fetchone()
    assert row is not None and row["state"] == "failed" and "40 missing" in row["error"]
    # ... the Python API ...
    async with AsyncClient(db_url, settings=settings) as client:
        with pytest.raises(ValidationError, match="incomplete"):
            await client.promote("docs", building.id)
    # ... and the admin page: no Promote button on docs' building generation, nor on the
    # healthy target's retired one; each says why instead.
    page = admin.render(await admin.gather(conn, []))
    assert _promote_buttons(page) == 0
    assert f'data-not-promotable="{building.id}"' in page and "40 missing" in page
    assert f'data-not-promotable="{notes_first.id}"' in page  # retired by the promote
    docs = await get_target(conn, "docs")
    assert docs.active is not None and docs.active.id == target.active.id  # nothing switched

    # The healthy target is unaffected: its promoted generation is the one it searches.
    notes = await get_target(conn, "notes")
    assert notes.active is not None and notes.active.id == healthy.generation_id


async def test_a_moment_old_live_edit_counts_and_dry_run_shows_coverage(
    conn: AsyncConn, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The grace is 30 s; a busy machine must not make this test depend on the clock.
    monkeypatch.setattr(promote, "LIVE_EDIT_GRACE_SECONDS", 3600)
    await text_targets(conn, ("docs", "notes"), rows=20)
    await _initial_sync(conn, db_url)
    settings = job_settings()
    job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
    other = await jobs.request_reembed(conn, settings, "notes", model="local-hash", dimensions=128)
    async with running_daemon(db_url, settings):
        await wait_for(lambda: _state(conn, job.id, JobState.COMPLETED))
        await wait_for(lambda: _state(conn, other.id, JobState.COMPLETED))
        await wait_for(lambda: queue_empty(conn))
    # An edit captured a moment ago (no daemon running: it waits in the inbox) is allowed.
    await conn.execute("UPDATE docs SET body = 'just edited' WHERE id = 3")
    page = admin.render(await admin.gather(conn, []))
    assert _promote_buttons(page) == 2  # both complete building generations
    dry = json.loads(
        await run_cli(db_url, "promote", "docs", str(job.generation_id), "--dry-run", "--json")
    )
    assert dry["dry_run"] is True
    assert (dry["rows"], dry["current"], dry["missing"], dry["failed"]) == (20, 19, 0, 0)
    target = await get_target(conn, "docs")
    assert target.active is not None and target.active.id == 1  # nothing switched
    text = await run_cli(db_url, "promote", "docs", str(job.generation_id), "--dry-run")
    assert "dry run" in text and "19/20 rows current" in text
    done = await promote.promote(conn, "docs", job.generation_id)
    assert done.coverage.queued == 1 and done.coverage.complete
    # The neighbour's generation is promotable on its own.
    await promote.promote(conn, "notes", other.generation_id)


# --- 2. jobs finish ---------------------------------------------------------------------------


async def test_a_job_with_a_poison_row_completes_with_failed_rows(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    await text_targets(conn, ("docs", "notes"), rows=30)
    await conn.execute("UPDATE docs SET body = 'POISON inside' WHERE id = 7")
    await _initial_sync(conn, db_url)
    simulator.set_faults(poison=["POISON"])
    settings = sim_job_settings(simulator)
    job = await jobs.request_reembed(
        conn,
        settings,
        "docs",
        model=SIM_MODEL,
        dimensions=SIM_DIMS,
        provider="sim",
        auto_promote=True,
    )
    await backfill.JobRunner(settings).tick(conn)  # started: total_rows counted now
    assert (await _job(conn, job.id)).total_rows == 30
    # Rows come and go during the job: done/total must still add up when it completes.
    await conn.execute("DELETE FROM docs WHERE id IN (1, 2)")
    await conn.execute("INSERT INTO docs VALUES (31, 'docs title 31', 'new'), (32, 't', 'b')")
    healthy = await jobs.request_reembed(
        conn, settings, "notes", model=SIM_MODEL, dimensions=SIM_DIMS, provider="sim"
    )

    def factory(name: str) -> Any:
        return build_provider(name, settings) if name == "sim" else LocalHashProvider()

    async with running_daemon(db_url, settings, provider_factory=factory):
        await wait_for(lambda: _state(conn, job.id, JobState.COMPLETED))
        await wait_for(lambda: _state(conn, healthy.id, JobState.COMPLETED))
        await wait_for(lambda: _only_failed_left(conn))
        finished = await _job(conn, job.id)
        assert (finished.done_rows, finished.total_rows, finished.failed_rows) == (29, 30, 1)
        assert "not promoted automatically" in (finished.error or "")
        target = await get_target(conn, "docs")
        assert target.active is not None and target.active.id == 1  # 1 failed: not promoted

        # 'failed retry' says the row failed again, and why.
        out = await run_cli(db_url, "failed", "retry", "--target", "docs", "--json")
        retried = json.loads(out)
        assert (retried["retried"], retried["failed_again"], retried["succeeded"]) == (1, 1, 0)
        assert any("inappropriate content" in e for e in retried["errors"])
        text = await run_cli(db_url, "failed", "retry", "--target", "docs")
        assert "1 failed again" in text and "inappropriate content" in text

    # Shown everywhere a job is shown.
    listed = json.loads(await run_cli(db_url, "jobs", "list", "--json"))
    mine = next(j for j in listed if j["id"] == job.id)
    assert (mine["state"], mine["failed_rows"]) == ("completed", 1)
    assert (
        await scalar(conn, "SELECT failed_rows FROM syncsvc.job_status WHERE id = %s", (job.id,))
        == 1
    )
    async with AsyncClient(db_url, settings=settings) as client:
        assert (await client.job(job.id)).failed_rows == 1
    page = admin.render(await admin.gather(conn, []))
    assert 'data-failed="1"' in page
    assert "Promote without 1 failed rows" in page

    # Promoting names the failed row and needs --accept-failed.
    out = await run_cli(db_url, "promote", "docs", str(job.generation_id), code=1)
    assert "1 failed (keys [7])" in out and "--accept-failed" in out
    dry = json.loads(
        await run_cli(
            db_url,
            "promote",
            "docs",
            str(job.generation_id),
            "--accept-failed",
            "--dry-run",
            "--json",
        )
    )
    assert (dry["dry_run"], dry["failed"], dry["failed_keys"]) == (True, 1, [[7]])
    # From SQL: accept_failed is the same flag, carried out by the daemon's code.
    request = await scalar(
        conn,
        "SELECT syncsvc.promote('docs', %s, accept_failed => true)",
        (job.generation_id,),
    )
    await actions.carry_out(conn, settings)
    cur = await conn.execute(
        "SELECT state, error, result FROM syncsvc.requests WHERE id = %s", (request,)
    )
    row = await cur.fetchone()
    assert row is not None and row["state"] == "done", row
    assert (row["result"]["generation"], row["result"]["failed"]) == (job.generation_id, 1)
    # The healthy target: no failure, nothing left over.
    other = await _job(conn, healthy.id)
    assert (other.done_rows, other.total_rows, other.failed_rows) == (30, 30, 0)


async def test_missing_rows_are_rescanned_whatever_the_failed_count(
    conn: AsyncConn, db_url: str
) -> None:
    await text_targets(conn, ("docs", "notes"), rows=30)
    await _initial_sync(conn, db_url)
    # A configured maximum of failed rows lets --auto-promote go ahead with one.
    settings = job_settings(promote_max_failed=1)
    job = await jobs.request_reembed(
        conn, settings, "docs", model="local-hash", dimensions=128, auto_promote=True
    )
    await backfill.JobRunner(settings).tick(conn)
    assert (await _job(conn, job.id)).scan_done
    # The scan is over, one row failed for good, and the rest left the queue unembedded
    # (as after a provider pause and a restart): the job must scan again, not wait.
    await conn.execute(
        "UPDATE syncsvc.queue SET state = 'failed', last_error = '400 poison' "
        "WHERE pk = '[7]' AND target_id = (SELECT id FROM syncsvc.targets WHERE name = 'docs')"
    )
    await conn.execute("DELETE FROM syncsvc.queue WHERE state <> 'failed'")
    await backfill.JobRunner(settings).tick(conn)
    rescanned = await _job(conn, job.id)
    assert rescanned.passes == 1
    async with running_daemon(db_url, settings):
        await wait_for(lambda: _state(conn, job.id, JobState.COMPLETED))
    finished = await _job(conn, job.id)
    assert (finished.done_rows, finished.total_rows, finished.failed_rows) == (29, 30, 1)
    docs = await get_target(conn, "docs")
    assert docs.active is not None and docs.active.id == job.generation_id
    assert await vector_count(conn, "notes_embeddings") == 30


# --- 3. cancel stops spending at once ---------------------------------------------------------


class GatedProvider:
    """The simulator's provider behind a gate: requests wait here as claimed work waits for a
    request slot, so a cancel can land between claim and send."""

    def __init__(self, inner: Any, *, hold_answers: bool = False) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.hold_answers = hold_answers
        """Gate the answer instead: the request is sent and answered, then held here as an
        answer still in flight."""
        self.entered = 0
        self.answered = 0
        self.left = 0

    @property
    def name(self) -> str:
        return str(self.inner.name)

    @property
    def profile(self) -> Any:
        return self.inner.profile

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self.entered += 1
        try:
            if not self.hold_answers:
                await self.gate.wait()
            response: EmbeddingResponse = await self.inner.embed(request)
            self.answered += 1
            await self.gate.wait()
            return response
        finally:
            self.left += 1

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_cancel_stops_requests_for_its_generation_at_once(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    await text_targets(conn, ("docs", "notes"), rows=200)
    await _initial_sync(conn, db_url)
    settings = sim_job_settings(simulator, max_queued_rows=100)
    gated = GatedProvider(build_provider("sim", settings))
    local = LocalHashProvider()

    def factory(name: str) -> Any:
        return gated if name == "sim" else local

    job = await jobs.request_reembed(
        conn, settings, "docs", model=SIM_MODEL, dimensions=SIM_DIMS, provider="sim"
    )
    async with running_daemon(db_url, settings, provider_factory=factory):

        async def claimed() -> bool:
            return gated.entered >= 1

        await wait_for(claimed)
        cancelled = await jobs.cancel_job(conn, job.id)
        assert cancelled.state is JobState.CANCELLED
        sent_at_cancel = simulator.stats()["requests"]
        gated.gate.set()

        async def settled() -> bool:
            return gated.left == gated.entered and await queue_empty(conn)

        await wait_for(settled)
        # The healthy neighbour and docs' live edits go on (on the active generation).
        await conn.execute("UPDATE notes SET body = 'after the cancel' WHERE id = 5")
        await conn.execute("UPDATE docs SET body = 'after the cancel' WHERE id = 6")
        await wait_for(lambda: queue_empty(conn))
        assert simulator.stats()["requests"] == sent_at_cancel == 0
    target = await get_target(conn, "docs")
    gen = next(g for g in target.generations if g.id == job.generation_id)
    assert gen.state is GenerationState.CANCELLED
    assert await vector_count(conn, gen.table_name) == 0
    for name in ("notes", "docs"):
        assert await _current_vectors(conn, name, "after the cancel") == 1, name
    # Neither promotable nor resumable by accident; 'generation drop' removes its table.
    with pytest.raises(ValidationError, match="cancelled job"):
        await promote.promote(conn, "docs", gen.id)
    out = await run_cli(db_url, "generation", "drop", "docs", str(gen.id))
    assert "dropped" in out
    assert await scalar(conn, "SELECT to_regclass(%s) IS NULL", (f"syncsvc.{gen.table_name}",))


async def test_answers_in_flight_at_cancel_are_discarded(
    conn: AsyncConn, db_url: str, simulator: SimulatorThread
) -> None:
    await text_targets(conn, ("docs", "notes"), rows=60)
    await _initial_sync(conn, db_url)
    settings = sim_job_settings(simulator, max_queued_rows=60)
    gated = GatedProvider(build_provider("sim", settings), hold_answers=True)
    local = LocalHashProvider()

    def factory(name: str) -> Any:
        return gated if name == "sim" else local

    job = await jobs.request_reembed(
        conn, settings, "docs", model=SIM_MODEL, dimensions=SIM_DIMS, provider="sim"
    )
    table = (await get_target(conn, "docs")).generations[-1].table_name
    async with running_daemon(db_url, settings, provider_factory=factory):

        async def answered() -> bool:
            return gated.answered >= 1

        await wait_for(answered)
        await jobs.cancel_job(conn, job.id)
        assert await vector_count(conn, table) == 0
        gated.gate.set()

        async def settled() -> bool:
            return gated.left == gated.entered and await queue_empty(conn)

        await wait_for(settled)
        await conn.execute("UPDATE notes SET body = 'still served' WHERE id = 1")
        await wait_for(lambda: queue_empty(conn))
    # Paid for, but not kept: the cancelled generation did not grow after the cancel.
    assert gated.answered >= 1
    assert await vector_count(conn, table) == 0
    assert await _current_vectors(conn, "notes", "still served") == 1


# --- small ones -------------------------------------------------------------------------------


async def test_status_eta_is_unknown_when_nothing_is_queued_at_zero_percent(
    conn: AsyncConn, db_url: str
) -> None:
    await text_targets(conn, ("docs", "notes"), rows=5)
    await _initial_sync(conn, db_url)
    target = await get_target(conn, "docs")
    assert target.active is not None
    # Vectors lost behind syncsvc's back: 0% embedded and nothing queued yet.
    await conn.execute(f"TRUNCATE syncsvc.{target.active.table_name}")
    found = {s.target: s for s in await status.collect(conn)}
    assert (found["docs"].embedded, found["docs"].pending, found["docs"].eta_seconds) == (
        0,
        0,
        None,
    )
    assert found["notes"].eta_seconds == 0.0  # all done: nothing left
    listed = json.loads(await run_cli(db_url, "status", "--json"))
    assert next(s for s in listed if s["target"] == "docs")["eta_seconds"] is None
    # SQL readers get the same answer from the one definition.
    cur = await conn.execute("SELECT target, eta_seconds FROM syncsvc.status ORDER BY target")
    assert [(r["target"], r["eta_seconds"]) for r in await cur.fetchall()] == [
        ("docs", None),
        ("notes", 0.0),
    ]


async def test_admin_page_promotes_past_failed_rows_only_when_asked(
    conn: AsyncConn, db_url: str
) -> None:
    import httpx

    from tests.ops_support import web_daemon, web_settings

    await text_targets(conn, ("docs", "notes"), rows=20)
    await conn.execute("UPDATE docs SET body = 'POISON here' WHERE id = 4")
    settings = web_settings(jobs=job_settings().jobs)
    async with (
        web_daemon(db_url, settings=settings) as (_, web),
        httpx.AsyncClient(base_url=web.url, headers={"Origin": web.url}) as client,
    ):
        await wait_for(lambda: _only_failed_left(conn))
        job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
        other = await jobs.request_reembed(
            conn, settings, "notes", model="local-hash", dimensions=128
        )
        await wait_for(lambda: _state(conn, job.id, JobState.COMPLETED))
        await wait_for(lambda: _state(conn, other.id, JobState.COMPLETED))
        assert (await _job(conn, job.id)).failed_rows == 1
        page = (await client.get("/admin")).text
        assert "Promote without 1 failed rows" in page
        assert _promote_buttons(page) == 2  # docs (past its failed row) and notes
        form = {"target": "docs", "generation": str(job.generation_id)}
        refused = await client.post("/admin/promote", data=form)
        # A refused action answers 4xx with the reason on the page (test_web_input.py).
        assert refused.status_code == 400, refused.status_code
        assert "accept-failed" in html.unescape(refused.text)
        accepted = await client.post("/admin/promote", data={**form, "accept_failed": "1"})
        assert accepted.status_code == 303, accepted.text[:300]
        assert "err=" not in accepted.headers["location"], accepted.headers["location"]
        notes = await client.post(
            "/admin/promote", data={"target": "notes", "generation": str(other.generation_id)}
        )
        assert notes.status_code == 303 and "err=" not in notes.headers["location"]
    for name, gen in (("docs", job.generation_id), ("notes", other.generation_id)):
        target = await get_target(conn, name)
        assert target.active is not None and target.active.id == gen
