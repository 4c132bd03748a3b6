"""The admin page in a real (headless) Chromium: clicking "Retry failed" changes the database."""

from __future__ import annotations

import pytest

from syncsvc.core.types import AsyncConn
from tests.cdp_support import browser_page, chromium_path
from tests.helpers import queue_empty, scalar, wait_for
from tests.ops_support import POISON_ERROR, PoisonProvider, web_daemon
from tests.test_sync import add, make_articles

CHROMIUM = chromium_path()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); CI installs it",
)

FAILED = "SELECT count(*) FROM syncsvc.queue WHERE state = 'failed'"


async def test_clicking_retry_failed_requeues_rows(conn: AsyncConn, db_url: str) -> None:
    assert CHROMIUM is not None
    await make_articles(conn, rows=6)
    await conn.execute("UPDATE articles SET body = 'POISON pill' WHERE id IN (2, 5)")
    await add(conn)
    provider = PoisonProvider()
    async with web_daemon(db_url, provider) as (_, web):
        await wait_for(lambda: _failed_is(conn, 2))
        async with browser_page(CHROMIUM) as page:
            await page.goto(f"{web.url}/admin")
            assert await page.evaluate("document.title") == "syncsvc admin"
            failed_cell = 'tr[data-target="articles"] td[data-col="failed"]'
            shown = await page.evaluate(f"document.querySelector('{failed_cell}').textContent")
            assert shown == "2"
            failures = await page.evaluate("document.getElementById('failures').innerText")
            assert POISON_ERROR in failures
            provider.poison = None  # the operator fixed the cause
            await page.click('tr[data-target="articles"] button[data-action="retry-failed"]')
            flash = await page.evaluate("document.getElementById('flash').textContent")
            assert flash == "2 failed rows queued again for articles"
            await wait_for(lambda: queue_empty(conn))
            assert await scalar(conn, FAILED) == 0
            embedded = "SELECT count(*) FROM syncsvc.articles_embeddings WHERE id IN (2, 5)"
            assert await scalar(conn, embedded) == 2
            await page.goto(f"{web.url}/admin")
            assert "No failed rows." in await page.evaluate("document.body.innerText")


async def _failed_is(conn: AsyncConn, n: int) -> bool:
    return bool(await scalar(conn, FAILED) == n)
