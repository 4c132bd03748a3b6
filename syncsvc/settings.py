"""Kept only for ``migrations/env.py``, which imports ``Settings`` from this path; the module is
``syncsvc.core.settings``."""

from __future__ import annotations

from syncsvc.core.settings import Settings

__all__ = ["Settings"]
