"""Issue 25, item 1: the admin page in headless Chromium shows charts and progress bars with
data, a stalled target with its reason beside a healthy one, and an "as of" time.

A daemon embeds two targets (sampling every few hundredths of a second, so its ring buffer
fills without waiting); one is then paused with rows waiting. The page is checked twice: in
the DOM (polyline points, bar widths against their percentages, stall markers) and in the
pixels of a PNG screenshot (the chart and bar colours are drawn).
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from syncsvc import jobs
from syncsvc.capture import drift
from syncsvc.core.types import AsyncConn
from syncsvc.web.charts import COLOURS, HEIGHT
from tests.cdp_support import browser_page, chromium_path
from tests.helpers import queue_empty, scalar, text_targets, wait_for
from tests.ops_support import PoisonProvider, web_daemon, web_settings

CHROMIUM = chromium_path()

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (Debian: apt-get install chromium); CI installs it",
)

BAR_GREEN = (0x2E, 0x9E, 0x4F)
"""``.bar .fill`` in style.css."""
STALLED_BAR = (0xD0, 0x8A, 0x1E)

BARS = """
[...document.querySelectorAll('tr[data-target]')].map(tr => {
  const bar = tr.querySelector('.bar'), fill = bar.querySelector('.fill');
  return {target: tr.dataset.target, percent: parseFloat(bar.dataset.percent),
          drawn: 100 * fill.getBoundingClientRect().width / bar.clientWidth,
          stall: tr.dataset.stall || null,
          state: tr.querySelector('td[data-col="state"]').innerText,
          text: tr.querySelector('td[data-col="progress"]').innerText};
})
"""

JOB_BARS = """
[...document.querySelectorAll('tr[data-job]')].map(tr => {
  const bar = tr.querySelector('.bar'), fill = bar.querySelector('.fill');
  return {job: tr.dataset.job, percent: parseFloat(bar.dataset.percent),
          drawn: 100 * fill.getBoundingClientRect().width / bar.clientWidth,
          stall: tr.dataset.stall || null,
          cost: tr.querySelector('td[data-col="cost"]').innerText,
          text: tr.querySelector('td[data-col="progress"]').innerText};
})
"""

LINES = """
[...document.querySelectorAll('#charts figure.chart')].map(f => ({
  chart: f.dataset.chart,
  lines: [...f.querySelectorAll('polyline')].map(p => ({
    series: p.dataset.series, stroke: p.getAttribute('stroke'),
    points: p.getAttribute('points').trim().split(/\\s+/).filter(Boolean)
      .map(xy => xy.split(',').map(Number))}))}))
"""


def _near(pixel: tuple[int, ...], colour: tuple[int, int, int], tolerance: int = 24) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], colour, strict=True))


def _count_colour(image: Image.Image, colour: tuple[int, int, int]) -> int:
    data = image.convert("RGB").tobytes()
    return sum(1 for i in range(0, len(data), 3) if _near(tuple(data[i : i + 3]), colour))


def _hex(colour: str) -> tuple[int, int, int]:
    value = int(colour.lstrip("#"), 16)
    return (value >> 16) & 255, (value >> 8) & 255, value & 255


async def _true(conn: AsyncConn, query: str) -> bool:
    return bool(await scalar(conn, query))


async def _samples(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    answer = await client.get("/admin/stats")
    assert answer.status_code == 200, answer.text
    samples: list[dict[str, Any]] = answer.json()["samples"]
    return samples


async def test_page_draws_charts_progress_and_a_stall_with_data(
    conn: AsyncConn, db_url: str, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    await text_targets(conn, names=("docs", "notes"), rows=30)
    settings = web_settings(admin_sample_seconds=0.05, admin_stall_seconds=0.5)
    async with (
        web_daemon(db_url, PoisonProvider(poison=None), settings) as (_, web),
        httpx.AsyncClient(base_url=web.url) as client,
    ):
        await wait_for(lambda: queue_empty(conn))
        # A re-embedding job of docs runs to the end: its bar, rate and cost are drawn too.
        job = await jobs.request_reembed(conn, settings, "docs", model="local-hash", dimensions=128)
        done = f"SELECT state = 'completed' FROM syncsvc.jobs WHERE id = {job.id}"
        await wait_for(lambda: _true(conn, done))
        # notes stops with rows waiting: 30 of 40 embedded, "stalled: paused (...)".
        await drift.pause(conn, "notes")
        await conn.execute(
            "INSERT INTO notes SELECT i, 'new ' || i, 'late' FROM generate_series(31, 40) i"
        )

        async def charted() -> bool:
            samples = await _samples(client)
            busy = [s for s in samples if s["rows_per_second"] > 0]
            return (
                len(samples) >= 3 and bool(busy) and samples[-1]["target_depth"].get("notes") == 10
            )

        await wait_for(charted)
        samples = await _samples(client)
        assert all(s["target_depth"].get("docs") == 0 for s in samples[-1:])
        assert await scalar(conn, "SELECT count(*) FROM syncsvc.notes_embeddings") == 30

        async with browser_page(CHROMIUM) as page:
            await page.resize(1400, 900)
            await page.goto(f"{web.url}/admin?refresh=0")
            assert await page.evaluate("document.title") == "syncsvc admin"
            assert not await page.evaluate("document.getElementById('autorefresh').checked")
            as_of = await page.evaluate("document.getElementById('as-of').innerText")
            assert re.fullmatch(r"as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", as_of), as_of

            bars = {b["target"]: b for b in await page.evaluate(BARS)}
            assert bars["docs"]["percent"] == 100.0 and "100.0% (30/30)" in bars["docs"]["text"]
            assert bars["notes"]["percent"] == 75.0 and "75.0% (30/40)" in bars["notes"]["text"]
            for bar in bars.values():
                assert abs(bar["drawn"] - bar["percent"]) < 1.5, bar
            # The stalled target says why; its healthy neighbour is not marked.
            assert bars["notes"]["stall"] == "paused"
            assert bars["notes"]["state"] == "stalled: paused (paused by an operator)"
            assert bars["docs"]["stall"] is None and bars["docs"]["state"] == "up to date"
            eta = await page.evaluate(
                'document.querySelector(\'tr[data-target="notes"] td[data-col="eta"]\').innerText'
            )
            assert eta == "-"  # no promise of an end while it is stalled

            (job_bar,) = await page.evaluate(JOB_BARS)
            assert job_bar["job"] == str(job.id) and job_bar["percent"] == 100.0
            assert abs(job_bar["drawn"] - 100.0) < 1.5 and "100.0% (30/30)" in job_bar["text"]
            assert job_bar["stall"] is None and job_bar["cost"] == "$0.0000"  # as the CLI

            charts = {c["chart"]: c for c in await page.evaluate(LINES)}
            assert set(charts) == {"rows", "lag", "queue", "api"}
            (rows,) = charts["rows"]["lines"]
            assert len(rows["points"]) > 1
            # Some sample had rows/s above zero: a point above the baseline.
            assert min(y for _, y in rows["points"]) < HEIGHT
            (queue,) = charts["queue"]["lines"]
            assert len(queue["points"]) > 1
            assert {line["series"] for line in charts["lag"]["lines"]} == {"p50", "p99"}
            assert len(charts["api"]["lines"][0]["points"]) > 1

            png = await page.screenshot(tmp_path / "admin.png")
        (tmp_path / "charts.json").write_text(json.dumps(charts))

    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width >= 1200
    assert _count_colour(image, _hex(COLOURS[0])) > 50  # chart lines
    assert _count_colour(image, BAR_GREEN) > 100  # the healthy bar, 100% filled
    assert _count_colour(image, STALLED_BAR) > 50  # the stalled one, 75% filled
