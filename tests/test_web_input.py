"""Issue 22, item 5: the admin page answers every malformed request 4xx with a reason.

Each form and button gets unknown names, out-of-range and malformed ids, missing fields,
hostile text and the wrong method. Nothing answers 500, and nothing changes: the targets (the
one named and its healthy neighbour) are neither paused nor touched.
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator

import httpx
import pytest

from syncsvc import jobs
from syncsvc.core.types import AsyncConn
from syncsvc.db.database import create_pool
from syncsvc.web.app import create_app
from syncsvc.web.auth import AdminAccess
from tests.helpers import fast_settings, scalar, text_targets
from tests.ops_support import web_settings

ORIGIN = {"Origin": "http://127.0.0.1"}
HUGE = "99999999999999999999"
HOSTILE = "nope%s {x} '\"$$\\ é"

Case = tuple[str, dict[str, str], int, str]
"""(path, form, expected status, text the answer must contain)."""

CASES: list[Case] = [
    # Retry failed rows.
    ("/admin/retry-failed", {"target": "nope"}, 404, "no target named 'nope'"),
    ("/admin/retry-failed", {"target": HOSTILE}, 404, "no target named"),
    ("/admin/retry-failed", {"target": "a\x00b"}, 400, "NUL"),
    # Re-embed (dry run and start).
    ("/admin/jobs/start", {}, 400, "missing field"),
    ("/admin/jobs/start", {"target": "docs"}, 400, "missing field"),
    ("/admin/jobs/start", {"target": "nope", "model": "local-hash", "dimensions": "128"}, 404,
     "nope"),
    ("/admin/jobs/start", {"target": HOSTILE, "model": "local-hash", "dimensions": "128",
                           "mode": "start"}, 404, "no target"),
    ("/admin/jobs/start", {"target": "docs", "model": "local-hash", "dimensions": "abc"}, 400,
     "whole number"),
    ("/admin/jobs/start", {"target": "docs", "model": "local-hash", "dimensions": HUGE}, 400,
     "between 1 and"),
    ("/admin/jobs/start", {"target": "docs", "model": "local-hash", "dimensions": "-5"}, 400,
     "between 1 and"),
    ("/admin/jobs/start", {"target": "docs", "model": HOSTILE, "dimensions": "128",
                           "mode": "start"}, 400, ""),
    ("/admin/jobs/start", {"target": "docs", "model": "local-hash", "dimensions": "128",
                           "provider": HOSTILE, "mode": "start"}, 400, ""),
    # Job buttons.
    (f"/admin/jobs/{HUGE}/cancel", {}, 400, "between 1 and"),
    ("/admin/jobs/abc/cancel", {}, 400, "whole number"),
    ("/admin/jobs/0/pause", {}, 400, "between 1 and"),
    ("/admin/jobs/999/cancel", {}, 404, "999"),
    ("/admin/jobs/999/resume", {}, 404, "999"),
    ("/admin/jobs/1/explode", {}, 400, "unknown job action"),
    # Promote.
    ("/admin/promote", {}, 400, "missing field"),
    ("/admin/promote", {"target": "nope", "generation": "1"}, 404, "nope"),
    ("/admin/promote", {"target": "docs", "generation": "abc"}, 400, "whole number"),
    ("/admin/promote", {"target": "docs", "generation": HUGE}, 400, "between 1 and"),
    ("/admin/promote", {"target": "docs", "generation": "999"}, 404, "999"),
    # Pause and resume.
    ("/admin/targets/pause", {}, 400, "missing field"),
    ("/admin/targets/pause", {"target": "nope"}, 404, "no target named 'nope'"),
    ("/admin/targets/resume", {"target": HOSTILE}, 404, "no target named"),
    ("/admin/targets/explode", {"target": "docs"}, 400, "unknown target action"),
]  # fmt: skip


@pytest.fixture
async def admin(conn: AsyncConn, db_url: str) -> AsyncIterator[httpx.AsyncClient]:
    await text_targets(conn, names=("docs", "notes"), rows=3)
    pool = create_pool(db_url, min_size=1, max_size=2)
    await pool.open()
    app = create_app(pool, web_settings(), AdminAccess(True, None))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        await pool.close()


async def _untouched(conn: AsyncConn) -> None:
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.targets") == 2
    assert (
        await scalar(conn, "SELECT count(*) FROM syncsvc.targets WHERE paused_reason IS NULL") == 2
    )
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.jobs") == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.generations") == 2


@pytest.mark.parametrize(("path", "form", "status", "text"), CASES)
async def test_every_form_refuses_malformed_input_with_4xx(
    admin: httpx.AsyncClient, conn: AsyncConn, path: str, form: dict[str, str], status: int,
    text: str,
) -> None:  # fmt: skip
    answer = await admin.post(path, data=form, headers=ORIGIN)
    assert answer.status_code == status, (answer.status_code, answer.text[:500])
    assert text in html.unescape(answer.text)
    await _untouched(conn)


async def test_malformed_bodies_and_wrong_methods(
    admin: httpx.AsyncClient, conn: AsyncConn
) -> None:
    # Not UTF-8, broken percent-encoding, a field given twice: still a reasoned 4xx.
    raw = {**ORIGIN, "Content-Type": "application/x-www-form-urlencoded"}
    for body in (b"\xff\xfe=%%%", b"target=%zz", b"target=docs&target=nope", b"&&==&"):
        answer = await admin.post("/admin/targets/pause", content=body, headers=raw)
        assert 400 <= answer.status_code < 500, (body, answer.status_code, answer.text[:300])
    for method, path in [
        ("GET", "/admin/retry-failed"),
        ("GET", "/admin/jobs/start"),
        ("GET", "/admin/jobs/1/cancel"),
        ("GET", "/admin/promote"),
        ("GET", "/admin/targets/pause"),
        ("PUT", "/admin"),
        ("DELETE", "/admin/targets/resume"),
        ("PATCH", "/login"),
        ("GET", "/logout"),
    ]:
        answer = await admin.request(method, path, headers=ORIGIN)
        assert answer.status_code == 405, (method, path, answer.status_code)
    assert (await admin.post("/admin/nope", headers=ORIGIN)).status_code == 404
    await _untouched(conn)
    # The healthy path still works afterwards, on the named target only.
    done = await admin.post("/admin/targets/pause", data={"target": "docs"}, headers=ORIGIN)
    assert done.status_code == 303
    assert (
        await scalar(conn, "SELECT count(*) FROM syncsvc.targets WHERE paused_reason IS NULL") == 1
    )


async def test_a_job_that_exists_takes_malformed_actions_without_changing(
    admin: httpx.AsyncClient, conn: AsyncConn
) -> None:
    job = await jobs.request_reembed(
        conn, fast_settings(), "docs", model="local-hash", dimensions=128
    )
    for action in ("explode", "CANCEL", "cancel%00", ""):
        answer = await admin.post(f"/admin/jobs/{job.id}/{action}", headers=ORIGIN)
        assert 400 <= answer.status_code < 500, (action, answer.status_code)
    assert await scalar(conn, "SELECT state FROM syncsvc.jobs") == "pending"
