"""Kept only for ``migrations/env.py``, which imports ``PUBLIC_FUNCTIONS`` from this path; the
module is ``syncsvc.db.privileges``."""

from __future__ import annotations

from syncsvc.db.privileges import PUBLIC_FUNCTIONS

__all__ = ["PUBLIC_FUNCTIONS"]
