"""The admin page's Jinja2 templates, autoescaped, shipped in ``syncsvc/web/templates``."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from starlette.templating import Jinja2Templates

DIRECTORY = Path(__file__).resolve().parent / "templates"


@cache
def templates() -> Jinja2Templates:
    """Starlette's templates over one environment: every ``{{ }}`` is HTML-escaped, and a
    name the view does not provide is an error, not an empty string."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(DIRECTORY),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return Jinja2Templates(env=env)


def render(name: str, **context: Any) -> str:
    """A template rendered to a string (tests and callers without a request)."""
    return templates().get_template(name).render(**context)
