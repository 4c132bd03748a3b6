"""Locate the SQL, migration and documentation files that ship beside the package."""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent.parent
"""The ``syncsvc`` package directory (this module lives in ``syncsvc/core``)."""


def _find(name: str) -> Path:
    # A source checkout (editable install) keeps them at the top level; a wheel keeps them inside.
    for candidate in (_PACKAGE.parent / name, _PACKAGE / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"syncsvc installation is missing its {name}/ directory")


@cache
def sql_dir() -> Path:
    return _find("sql")


@cache
def migrations_dir() -> Path:
    return _find("migrations")


@cache
def docs_dir() -> Path:
    return _find("docs")


def data_path(name: str) -> Path:
    return _PACKAGE / "data" / name
