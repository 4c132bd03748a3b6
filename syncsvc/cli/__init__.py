"""The ``syncsvc`` command line."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from typing import Annotated

import typer

from syncsvc.cli.context import STATE, print_error
from syncsvc.cli.failure import describe
from syncsvc.core import logs
from syncsvc.core.settings import Settings

app = typer.Typer(
    name="syncsvc",
    help="Keep PostgreSQL rows embedded in pgvector tables, live and swept.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # --install-completion / --show-completion for bash, zsh, fish and PowerShell.
    add_completion=True,
)

# Each module adds its own commands (a missing one is a broken install: it fails loudly).
COMMAND_MODULES = (
    "syncsvc.cli.core",
    "syncsvc.cli.targets",
    "syncsvc.cli.demo",
    "syncsvc.cli.simulate",
    "syncsvc.cli.search",
    "syncsvc.cli.jobs",
    "syncsvc.cli.generations",
    "syncsvc.cli.ops",
    "syncsvc.cli.grants",
    "syncsvc.cli.config",
    "syncsvc.cli.docs",
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"syncsvc {version('syncsvc')}")
        raise typer.Exit()


@app.callback()
def _global(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="SYNCSVC_DATABASE_URL",
            help="PostgreSQL URL (default: PG* variables, else the embedded server).",
            show_envvar=True,
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option("--log-format", help="text or json (default: settings, else text)"),
    ] = None,
    log_level: Annotated[str | None, typer.Option("--log-level")] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    if log_format not in (None, "text", "json"):
        raise typer.BadParameter("--log-format must be text or json")
    overrides: dict[str, object] = {}
    if database_url and database_url != os.environ.get("SYNCSVC_DATABASE_URL"):
        overrides["database_url"] = database_url  # else Settings reads the variable itself
    if log_format:
        overrides["log_format"] = log_format
    if log_level:
        overrides["log_level"] = log_level
    # Environment (SYNCSVC_LOG_FORMAT...) and syncsvc.toml are read by Settings itself.
    STATE.reset(Settings(**overrides), set(overrides))  # type: ignore[arg-type]
    logs.configure(STATE.settings.log_level, STATE.settings.log_format)
    logging.getLogger(__name__).debug("settings loaded")


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """The ``syncsvc`` entry point: known failures print one or two lines and exit 1."""
    args = sys.argv[1:] if argv is None else argv
    try:
        app(args=args, prog_name="syncsvc")
    except (SystemExit, KeyboardInterrupt):
        raise
    except Exception as exc:
        message = describe(exc)
        if message is None or _debug(args):
            raise
        if _option(args, "--log-format") == "json":
            logs.configure("INFO", "json")  # settings themselves may be what failed
        print_error(message)
        sys.exit(1)


def _option(args: list[str], name: str) -> str | None:
    """An option's value from the raw arguments (or its SYNCSVC_ variable)."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1].lower()
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1].lower()
    return os.environ.get("SYNCSVC_" + name[2:].replace("-", "_").upper(), "").lower() or None


def _debug(args: list[str]) -> bool:
    return _option(args, "--log-level") == "debug"
