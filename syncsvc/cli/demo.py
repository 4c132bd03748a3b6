"""``syncsvc demo``."""

from __future__ import annotations

from typing import Annotated

import typer

from syncsvc.cli.context import STATE, console, run
from syncsvc.embed.profiles import WORDLLAMA_MODEL


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    provider: Annotated[
        str,
        typer.Option(help="Provider to embed with (default: the offline WordLlama model)."),
    ] = "local",
    model: Annotated[str, typer.Option(help="Model of that provider.")] = WORDLLAMA_MODEL,
    dimensions: Annotated[int | None, typer.Option(help="Vector dimensions.")] = None,
) -> None:
    """Create a sample table, embed it live, edit rows, and run similarity queries."""
    from syncsvc.cli.demo_run import DemoOptions, run_demo

    settings = STATE.settings
    url = STATE.url()
    run(run_demo(settings, url, console, DemoOptions(provider, model, dimensions)))
