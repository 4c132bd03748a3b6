"""The daemon's web surface: Prometheus metrics, health probes and the admin page.

Names load on first use: ``syncsvc.web.health`` must not pull in Starlette and the admin page.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncsvc.web.app import create_app
    from syncsvc.web.auth import AdminAccess
    from syncsvc.web.server import WebService, parse_address

__all__ = ["AdminAccess", "WebService", "create_app", "parse_address"]

_HOMES = {
    "AdminAccess": "syncsvc.web.auth",
    "WebService": "syncsvc.web.server",
    "create_app": "syncsvc.web.app",
    "parse_address": "syncsvc.web.server",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
