"""The admin page: one server-rendered HTML document, plain forms, a few lines of inline JS.

Everything shown is read fresh from the database on each load (the same ``syncsvc.observe.status``
collection as ``syncsvc status``); every button is a ``<form method="post">`` answered with a
redirect back here carrying a one-line result, so the page works without JavaScript.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Any

from syncsvc.core.types import AsyncConn
from syncsvc.db import common, sqlfiles
from syncsvc.observe import status
from syncsvc.observe.status import percent
from syncsvc.web import jobs
from syncsvc.web.health import Check
from syncsvc.web.jobs import Promotable

FAILURES_SHOWN = 50

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin-bottom:.5em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#176f2c}.bad{color:#b00020}.muted{color:#777}
.flash{padding:.5em;border:1px solid #176f2c;background:#eef8f0}
.flash.err{border-color:#b00020;background:#fdecee}
form.inline{display:inline;margin:0}button{margin:1px}
input[type=text],input[type=number]{width:9em}progress{width:8em}
pre{white-space:pre-wrap;margin:0;max-width:60em}
"""

# Refreshes to /admin itself: a refused action's page is served at the action's path.
SCRIPT = """
(function(){
  var box=document.getElementById('autorefresh');
  if(localStorage.getItem('syncsvc-autorefresh')==='1'){box.checked=true;}
  box.addEventListener('change',function(){
    localStorage.setItem('syncsvc-autorefresh',box.checked?'1':'0');});
  setInterval(function(){
    var typing=document.activeElement&&document.activeElement.tagName==='INPUT'
      &&document.activeElement.type!=='checkbox';
    if(box.checked&&!typing){location.replace('/admin');}
  },10000);
})();
"""


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


async def gather(
    conn: AsyncConn,
    checks: list[Check],
    *,
    unpromoted_grace_seconds: float = 3600.0,
    promote_max_failed: int = 0,
) -> PageData:
    """Read everything the page shows."""
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
    )


def _e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.1f}s"
    if value < 7200:
        return f"{value / 60:.1f}m"
    return f"{value / 3600:.1f}h"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _button(action: str, label: str, fields: dict[str, object], *, confirm: str = "") -> str:
    hidden = "".join(
        f'<input type="hidden" name="{_e(k)}" value="{_e(v)}">' for k, v in fields.items()
    )
    ask = f" onsubmit=\"return confirm('{_e(confirm)}')\"" if confirm else ""
    slug = action.rsplit("/", 1)[-1]
    return (
        f'<form class="inline" method="post" action="{_e(action)}"{ask}>{hidden}'
        f'<button type="submit" data-action="{_e(slug)}">{_e(label)}</button></form>'
    )


def _targets(data: PageData) -> str:
    head = (
        "<tr><th>target</th><th>table</th><th>rows</th><th>embedded</th><th>coverage</th>"
        "<th>pending</th><th>in flight</th><th>failed</th><th>lag (oldest pending)</th>"
        "<th>active generation</th><th>paused</th><th>drift</th><th></th></tr>"
    )
    rows = []
    for t in data.targets:
        coverage = percent(t.embedded, t.rows)
        active = (
            f"{t.active_generation}: {t.model} ({t.dimensions})" if t.active_generation else "-"
        )
        retry = (
            _button("/admin/retry-failed", "Retry failed", {"target": t.target}) if t.failed else ""
        )
        toggle = "resume" if t.paused_reason else "pause"
        retry += _button(f"/admin/targets/{toggle}", toggle.capitalize(), {"target": t.target})
        rows.append(
            f'<tr data-target="{_e(t.target)}"><td>{_e(t.target)}</td><td>{_e(t.table)}</td>'
            f'<td class="n">{t.rows}</td><td class="n">{t.embedded}</td>'
            f'<td class="n">{coverage}</td><td class="n" data-col="pending">{t.pending}</td>'
            f'<td class="n">{t.in_flight}</td><td class="n" data-col="failed">{t.failed}</td>'
            f'<td class="n">{_seconds(t.oldest_pending_seconds)}</td><td>{_e(active)}</td>'
            f'<td class="bad">{_e(t.paused_reason or "")}</td>'
            f'<td data-col="drift">{_e(t.drift or "")}</td><td>{retry}</td></tr>'
        )
    if not rows:
        return '<p class="muted">No targets yet (<code>syncsvc target add</code>).</p>'
    return f'<table id="targets">{head}{"".join(rows)}</table>'


def _failures(data: PageData) -> str:
    if not data.failures:
        return '<p class="muted">No failed rows.</p>'
    rows = "".join(
        f'<tr><td>{_e(f["target"])}</td><td class="n">{_e(str(f["generation"] or "-"))}</td>'
        f"<td><code>{_e(json.dumps(f['pk']))}</code></td>"
        f'<td class="n">{f["attempts"]}</td><td><pre>{_e(f["last_error"])}</pre></td>'
        f"<td>{_e(f['request_id'] or '')}</td><td>{_when(f['updated_at'])}</td></tr>"
        for f in data.failures
    )
    retry_all = _button("/admin/retry-failed", "Retry all failed rows", {})
    return (
        f'<table id="failures"><tr><th>target</th><th>generation</th><th>key</th><th>attempts</th>'
        f"<th>last error</th><th>request id</th><th>at</th></tr>{rows}</table>{retry_all}"
        f'<p class="muted">Newest {FAILURES_SHOWN} shown.</p>'
    )


def _promote_cell(data: PageData, target: str, generation: int) -> str:
    """Promote only what the one promote check allows; otherwise say what is missing."""
    found = (data.promotable or {}).get(generation)
    if found is None:
        return ""  # the active generation, or jobs unavailable
    fields: dict[str, object] = {"target": target, "generation": generation}
    if found.refusal is None:
        return _button(
            "/admin/promote",
            "Promote",
            fields,
            confirm=f"Make generation {generation} the active one of {target}?",
        )
    if found.accept_failed_only:
        return (
            _button(
                "/admin/promote",
                f"Promote without {found.failed} failed rows",
                {**fields, "accept_failed": 1},
                confirm=f"Make generation {generation} the active one of {target}, although "
                f"{found.failed} rows failed for good (they have no vector there)?",
            )
            + f' <span class="muted">{_e(found.refusal)}</span>'
        )
    return f'<span class="muted" data-not-promotable="{generation}">{_e(found.refusal)}</span>'


def _generations(data: PageData) -> str:
    rows = []
    for t in data.targets:
        for g in t.generations:
            promote = _promote_cell(data, t.target, g["id"])
            rows.append(
                f'<tr><td>{_e(t.target)}</td><td class="n">{g["id"]}</td>'
                f"<td>{_e(g['state'])}</td><td>{_e(g['provider'])}</td><td>{_e(g['model'])}</td>"
                f'<td class="n">{g["dimensions"]}</td><td class="n">{g["embedded"]}</td>'
                f"<td>{promote}</td></tr>"
            )
    if not rows:
        return '<p class="muted">No generations.</p>'
    return (
        '<table id="generations"><tr><th>target</th><th>id</th><th>state</th><th>provider</th>'
        "<th>model</th><th>dims</th><th>embedded</th><th></th></tr>" + "".join(rows) + "</table>"
    )


def _reembed_forms(data: PageData) -> str:
    forms = []
    for t in data.targets:
        active = next((g for g in t.generations if g["state"] == "active"), None)
        forms.append(
            f'<form method="post" action="/admin/jobs/start" data-target="{_e(t.target)}">'
            f'<input type="hidden" name="target" value="{_e(t.target)}"><b>{_e(t.target)}</b> '
            f'provider <input type="text" name="provider" '
            f'value="{_e(active["provider"] if active else "")}"> '
            f'model <input type="text" name="model" required '
            f'value="{_e(active["model"] if active else "")}"> '
            f'dims <input type="number" name="dimensions" min="1" required '
            f'value="{_e(active["dimensions"] if active else "")}"> '
            '<button type="submit" name="mode" value="dry-run" data-action="dry-run">'
            "Dry run (estimate)</button> "
            '<button type="submit" name="mode" value="start" data-action="start-job">'
            "Start re-embedding</button></form>"
        )
    return "".join(forms)


def _jobs(data: PageData) -> str:
    if data.jobs is None:
        return '<p class="muted">Re-embedding jobs are not available in this build.</p>'
    rows = []
    for j in data.jobs:
        buttons = []
        if j.state in ("pending", "running"):
            buttons.append(_button(f"/admin/jobs/{j.id}/pause", "Pause", {}))
        if j.state in ("paused", "failed"):
            buttons.append(_button(f"/admin/jobs/{j.id}/resume", "Resume", {}))
        if j.state in ("pending", "running", "paused", "failed"):
            buttons.append(
                _button(f"/admin/jobs/{j.id}/cancel", "Cancel", {}, confirm=f"Cancel job {j.id}?")
            )
        rows.append(
            f'<tr data-job="{j.id}"><td class="n">{j.id}</td><td>{_e(j.target)}</td>'
            f'<td class="n">{j.generation}</td><td>{_e(j.model)} ({j.dimensions})</td>'
            f'<td>{_e(j.state)}</td><td><progress max="1" value="{j.progress:.4f}"></progress> '
            f"{percent(j.done, j.total or 0)} ({j.done}/{j.total})"
            + (
                f' <span class="bad" data-failed="{j.failed}">failed: {j.failed}</span>'
                if j.failed
                else ""
            )
            + "</td>"
            f"<td>{_seconds(j.eta_seconds)}</td>"
            f'<td class="n">{j.cost:.4f}</td><td class="bad">{_e(j.error or "")}</td>'
            f"<td>{''.join(buttons)}</td></tr>"
        )
    table = (
        '<table id="jobs"><tr><th>job</th><th>target</th><th>generation</th><th>model</th>'
        "<th>state</th><th>progress</th><th>eta</th><th>cost</th><th>error</th><th></th></tr>"
        + "".join(rows)
        + "</table>"
        if rows
        else '<p class="muted">No jobs yet.</p>'
    )
    return table + "<h3>Re-embed a target</h3>" + _reembed_forms(data)


def _daemons(data: PageData) -> str:
    if not data.daemons:
        return '<p class="muted">No daemon heartbeats.</p>'
    rows = "".join(
        f'<tr><td>{_e(d["id"])}</td><td>{_e(d["host"])}</td><td class="n">{d["pid"]}</td>'
        f"<td>{'scheduler' if d['leader'] else ''}</td><td>{_when(d['started_at'])}</td>"
        f"<td>{_seconds(d['seen_seconds_ago'])} ago</td></tr>"
        for d in data.daemons
    )
    return (
        '<table id="daemons"><tr><th>daemon</th><th>host</th><th>pid</th><th>role</th>'
        f"<th>started</th><th>last seen</th></tr>{rows}</table>"
    )


def _checks(checks: list[Check]) -> str:
    items = "".join(
        f'<li class="{"ok" if c.ok else "bad"}">{_e(c.name)}: {"ok" if c.ok else _e(c.detail)}</li>'
        for c in checks
    )
    ready = all(c.ok for c in checks)
    label = '<b class="ok">ready</b>' if ready else '<b class="bad">not ready</b>'
    return f'<p id="readiness">{label}</p><ul>{items}</ul>'


def render(data: PageData, *, message: str = "", error: str = "") -> str:
    """The whole page as HTML."""
    flash = ""
    if message:
        flash = f'<p class="flash" id="flash">{_e(message)}</p>'
    if error:
        flash = f'<p class="flash err" id="flash">{_e(error)}</p>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>syncsvc admin</title><style>{STYLE}</style></head>
<body><h1>syncsvc</h1>
<p><label><input type="checkbox" id="autorefresh"> refresh every 10 s</label>
 · <a href="/admin">reload</a> · <a href="/metrics">metrics</a></p>
{flash}
{"".join(f'<p class="bad warning">{_e(note)}</p>' for note in data.notes)}
<h2>Health</h2>{_checks(data.checks)}
<h2>Targets</h2>{_targets(data)}
<h2>Failed rows</h2>{_failures(data)}
<h2>Generations</h2>{_generations(data)}
<h2>Re-embedding jobs</h2>{_jobs(data)}
<h2>Daemons</h2>{_daemons(data)}
<script>{SCRIPT}</script>
</body></html>"""


LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>syncsvc admin: sign in</title>
<style>{style}</style></head><body><h1>syncsvc</h1>{error}
<form method="post" action="/login"><label>Admin token
<input type="password" name="token" autocomplete="current-password" required autofocus></label>
<button type="submit">Sign in</button></form></body></html>"""


def login_page(error: str = "") -> str:
    note = f'<p class="flash err">{_e(error)}</p>' if error else ""
    return LOGIN_PAGE.format(style=STYLE, error=note)
