"""The admin page's view model: what it shows, read and worked out, ready for the template.

Figures come from the code behind the CLI: ``syncsvc.observe.status.collect`` (what
``syncsvc status`` prints: coverage, rate, ETA, lag) for targets and ``syncsvc.jobs`` (what
``syncsvc jobs list`` prints) for re-embedding jobs, formatted by the same functions. Charts
and stalls come from the daemon's samples (``syncsvc.observe.history``); every button is a
``<form method="post">`` answered with a redirect back, so the page works without JavaScript.
The HTML is ``templates/admin.html``, autoescaped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from syncsvc.core.types import AsyncConn
from syncsvc.db import common, sqlfiles
from syncsvc.observe import stalls, status
from syncsvc.observe.history import WINDOW_SECONDS, Sample
from syncsvc.observe.stalls import Stall
from syncsvc.web import jobs
from syncsvc.web.charts import Chart, charts
from syncsvc.web.health import Check
from syncsvc.web.jobs import Promotable
from syncsvc.web.templating import render as render_template

FAILURES_SHOWN = 50
STALL_SECONDS = 60.0
REFRESH_SECONDS = 10


@dataclass(frozen=True)
class Progress:
    """A progress bar with its figures, as the CLI formats them."""

    done: int
    total: int | None
    """None: not counted yet (shown as ``?``, as the CLI does)."""
    rate: str
    eta: str

    @property
    def percent(self) -> str:
        return status.percent(self.done, self.total or 0)

    @property
    def width(self) -> str:
        """The bar's filled share in percent, rounded down like the text beside it."""
        shown = self.percent
        return "0" if shown == "-" else shown.rstrip("%")


@dataclass(frozen=True)
class TargetRow:
    status: status.TargetStatus
    progress: Progress
    lag: str
    stall: Stall | None

    @property
    def waiting(self) -> int:
        return self.status.pending + self.status.in_flight

    @property
    def slot(self) -> str | None:
        """WAL targets: the slot's retained WAL and lag, as ``syncsvc status`` words them (a
        lost slot shows as the target's pause reason); None for trigger targets."""
        t = self.status
        if t.capture != "wal":
            return None
        if t.wal_retained_bytes is None:
            return "no slot"
        return (
            f"slot retains {status.size(t.wal_retained_bytes)}, "
            f"{status.size(t.wal_lag_bytes)} behind"
        )

    @property
    def active(self) -> str:
        t = self.status
        return f"{t.active_generation}: {t.model} ({t.dimensions})" if t.active_generation else "-"


@dataclass(frozen=True)
class JobRow:
    job: jobs.JobView
    progress: Progress
    cost: str
    stall: Stall | None

    @property
    def open(self) -> bool:
        return self.job.state in ("pending", "running", "paused", "failed")


@dataclass(frozen=True)
class ReembedForm:
    target: str
    provider: str
    model: str
    dimensions: str

    @property
    def model_size(self) -> int:
        """Characters the model field shows: the whole current name, never cut off."""
        return max(28, len(self.model) + 2)


@dataclass
class PageData:
    targets: list[status.TargetStatus]
    failures: list[dict[str, Any]]
    jobs: list[jobs.JobView] | None
    daemons: list[dict[str, Any]] | None
    checks: list[Check]
    daemon_id: str | None = None
    leader: bool | None = None
    notes: list[str] = field(default_factory=list)
    promotable: dict[int, Promotable] | None = None
    """Per non-active generation, whether the page offers Promote (None: jobs unavailable)."""
    samples: Sequence[Sample] = ()
    """The daemon's samples of the last hour (empty: no daemon in this process)."""
    sampled: bool = False
    """Whether a daemon samples at all (the charts say how to get them otherwise)."""
    stall_seconds: float = STALL_SECONDS
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))

    def window(self) -> stalls.Window | None:
        return stalls.window(self.samples, self.stall_seconds)

    def target_rows(self) -> list[TargetRow]:
        win = self.window()
        rows = []
        for t in self.targets:
            # A problem the status view reports (an unreadable table) is not a pause: shown as
            # it is, with Pause offered, not Resume.
            paused = t.paused_reason if t.paused else None
            stall = stalls.target_stall(t.target, t.pending + t.in_flight, paused, win)
            # A stalled row gets no ETA: the last minute's rate says nothing of when it resumes.
            eta = "-" if stall else _eta(t)
            progress = Progress(t.embedded, t.rows, status.rate(t.rows_per_second), eta)
            rows.append(TargetRow(t, progress, status.seconds(t.oldest_pending_seconds), stall))
        return rows

    def job_rows(self) -> list[JobRow]:
        win = self.window()
        paused = {t.target: t.paused_reason for t in self.targets if t.paused}
        rows = []
        for j in self.jobs or []:
            stall = stalls.job_stall(
                j.id,
                j.state,
                left=max(0, j.total - j.done) if j.total else None,
                target=j.target,
                target_paused=paused.get(j.target),
                win=win,
            )
            eta = "-" if stall else status.duration(j.eta_seconds)
            progress = Progress(j.done, j.total, status.rate(j.rate), eta)
            rows.append(JobRow(j, progress, status.money(j.cost), stall))
        return rows

    def reembed_forms(self) -> list[ReembedForm]:
        forms = []
        for t in self.targets:
            active = next((g for g in t.generations if g["state"] == "active"), None)
            forms.append(
                ReembedForm(
                    t.target,
                    str(active["provider"]) if active else "",
                    str(active["model"]) if active else "",
                    str(active["dimensions"]) if active else "",
                )
            )
        return forms

    def charts(self) -> list[Chart]:
        return charts(self.samples, WINDOW_SECONDS)

    def ready(self) -> bool:
        return all(c.ok for c in self.checks)


def _eta(t: status.TargetStatus) -> str:
    # As ``syncsvc status``: an ETA only while something waits.
    return status.duration(t.eta_seconds) if t.pending or t.in_flight else "-"


async def gather(
    conn: AsyncConn,
    checks: list[Check],
    *,
    unpromoted_grace_seconds: float = 3600.0,
    promote_max_failed: int = 0,
    samples: Sequence[Sample] | None = None,
    stall_seconds: float = STALL_SECONDS,
) -> PageData:
    """Read everything the page shows (``samples``: the daemon's, None without one)."""
    targets = await status.collect(conn)
    cur = await conn.execute(sqlfiles.query("ops", "list_failed"), {"limit": FAILURES_SHOWN})
    failures = await cur.fetchall()
    daemons = None
    if await common.relation_oid(conn, "syncsvc", "daemons") is not None:
        cur = await conn.execute(sqlfiles.query("ops", "list_daemons"))
        daemons = await cur.fetchall()
    notes = [u.warning() for u in await status.unpromoted(conn, unpromoted_grace_seconds)]
    return PageData(
        targets,
        failures,
        await jobs.list_jobs(conn),
        daemons,
        checks,
        notes=notes,
        promotable=await jobs.promotion_checks(conn, promote_max_failed),
        samples=tuple(samples or ()),
        sampled=samples is not None,
        stall_seconds=stall_seconds,
    )


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def context(
    data: PageData, *, message: str = "", error: str = "", refresh: bool = True
) -> dict[str, Any]:
    """What ``admin.html`` is rendered with."""
    return {
        "data": data,
        "message": message,
        "error": error,
        "refresh": refresh,
        "refresh_seconds": REFRESH_SECONDS,
        "failures_shown": FAILURES_SHOWN,
        "as_of": data.as_of.strftime("%Y-%m-%d %H:%M:%S UTC"),
        "when": when,
        "seconds": status.seconds,
        "pk": lambda value: json.dumps(value, ensure_ascii=False),
    }


def render(data: PageData, *, message: str = "", error: str = "", refresh: bool = True) -> str:
    """The whole page as HTML."""
    return render_template(
        "admin.html", **context(data, message=message, error=error, refresh=refresh)
    )


def login_page(error: str = "") -> str:
    return render_template("login.html", error=error)
