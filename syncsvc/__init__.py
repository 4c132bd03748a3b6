"""syncsvc: keep PostgreSQL rows embedded in pgvector tables, and search them.

``syncsvc.Client`` (and ``syncsvc.AsyncClient``) is the Python search API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncsvc.client import AsyncClient, Client

__all__ = ["AsyncClient", "Client"]


def __getattr__(name: str) -> Any:
    # Lazy, so importing any submodule does not pull in the client and its dependencies.
    if name in __all__:
        from syncsvc import client

        return getattr(client, name)
    raise AttributeError(f"module 'syncsvc' has no attribute {name!r}")
