"""``syncsvc config show`` and ``syncsvc embedded status|stop``: where settings and the
database of an invocation come from."""

from __future__ import annotations

import os
import tomllib
from typing import Any

import typer
from rich.table import Table

from syncsvc.cli.context import STATE, JsonFlag, console, emit, setup_line
from syncsvc.core.settings import Settings, config_file, masked_url
from syncsvc.db import embedded
from syncsvc.providers.registry import provider_profile

config_app = typer.Typer(help="Show the effective settings and where each comes from.")
embedded_app = typer.Typer(help="The embedded PostgreSQL the demo and unconfigured runs use.")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
    app.add_typer(embedded_app, name="embedded")


def _leaves(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_leaves(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def _from_toml() -> dict[str, Any]:
    path = config_file()
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        return _leaves(tomllib.load(f))


def _env_name(key: str) -> str:
    return "SYNCSVC_" + key.replace(".", "__").upper()


def effective(settings: Settings, overridden: set[str]) -> list[dict[str, Any]]:
    """Every setting with its value (secrets masked) and its source: the command line, an
    environment variable, the config file or the default."""
    in_file = _from_toml()
    rows = []
    for key, value in sorted(_leaves(settings.model_dump(mode="json")).items()):
        if key in overridden:
            source = "command line"
        elif os.environ.get(_env_name(key)) is not None:
            source = f"env {_env_name(key)}"
        elif key in in_file:
            source = str(config_file())
        else:
            source = "default"
        if key == "database_url" and isinstance(value, str):
            value = masked_url(value)
        rows.append({"setting": key, "value": value, "source": source})
    for name in sorted(settings.providers):
        env = provider_profile(name, settings).api_key_env
        if env:
            state = "set" if (os.environ.get(env) or "").strip() else "missing"
            rows.append(
                {"setting": f"providers.{name}.api key", "value": state, "source": f"env {env}"}
            )
    return rows


@config_app.command("show")
def show(as_json: JsonFlag = False) -> None:
    """The effective settings, where each comes from, and the database this uses."""
    settings = STATE.settings
    rows = effective(settings, STATE.overridden)
    if as_json:
        emit(True, {"setup": setup_line(settings), "settings": rows}, "")
        return
    console.print(setup_line(settings), highlight=False)
    table = Table()
    for column in ("setting", "value", "source"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["setting"], str(row["value"]), row["source"])
    console.print(table)


@embedded_app.command("status")
def embedded_status(as_json: JsonFlag = False) -> None:
    """Whether the embedded PostgreSQL runs (it keeps running between commands)."""
    found = embedded.status(STATE.settings.state_dir)
    where = f"unix socket only, in {found.socket_dir}" if found.running else ""
    emit(
        as_json,
        {
            "pgdata": str(found.pgdata),
            "running": found.running,
            "pid": found.pid,
            "port": found.port,
            "socket_dir": None if found.socket_dir is None else str(found.socket_dir),
            "url": found.url,
            "psql": found.psql,
            "started_at": found.started_at,
        },
        f"embedded PostgreSQL in {found.pgdata}: "
        + (
            f"running (pid {found.pid}, {where})\nurl:  {found.url}\npsql: {found.psql}"
            if found.running
            else "not running"
        ),
    )


@embedded_app.command("stop")
def embedded_stop(as_json: JsonFlag = False) -> None:
    """Stop the embedded PostgreSQL; its data is kept and the next command starts it again."""
    state_dir = STATE.settings.state_dir
    stopped = embedded.stop(state_dir)
    emit(
        as_json,
        {"pgdata": str(state_dir / "pgdata"), "stopped": stopped},
        f"embedded PostgreSQL in {state_dir / 'pgdata'} "
        + ("stopped (its data is kept)" if stopped else "was not running"),
    )
