"""Kept only for ``migrations/env.py``, which imports ``resolve_url`` from this path; the module
is ``syncsvc.db.database``."""

from __future__ import annotations

from syncsvc.db.database import resolve_url

__all__ = ["resolve_url"]
