"""``syncsvc docs``: the documentation that ships inside the package, readable offline."""

from __future__ import annotations

from typing import Annotated

import typer

from syncsvc.cli.context import fail
from syncsvc.core.resources import docs_dir


def register(app: typer.Typer) -> None:
    app.command("docs")(docs_command)


def docs_command(
    page: Annotated[
        str | None,
        typer.Argument(help="A page (operations, sql, search, python); none lists them."),
    ] = None,
    path: Annotated[
        bool, typer.Option("--path", help="Print the page's file path instead of its text.")
    ] = False,
) -> None:
    """Read the installed documentation (the same pages as the repository's docs/)."""
    folder = docs_dir()
    pages = sorted(p.stem for p in folder.glob("*.md"))
    if page is None:
        typer.echo(str(folder) if path else "\n".join(pages))
        return
    name = page.removesuffix(".md")
    if name not in pages:
        raise fail(f"no documentation page {page!r}; pages: {', '.join(pages)}")
    file = folder / f"{name}.md"
    typer.echo(str(file) if path else file.read_text(encoding="utf-8"))
