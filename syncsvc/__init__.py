"""syncsvc: keep PostgreSQL rows embedded in pgvector tables, and search them.

``syncsvc.Client`` (and ``syncsvc.AsyncClient``) administer targets and search them; the
other public names are the typed results they return and the errors they raise. See
docs/python.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncsvc.client import AsyncClient, Client
    from syncsvc.errors import ConfigurationError, NotFoundError, SyncsvcError, ValidationError
    from syncsvc.failures import FailedRow
    from syncsvc.jobs import Estimate, Job, JobState
    from syncsvc.models import Generation, GenerationState, Metric, Target
    from syncsvc.promote import Coverage, GenerationCoverage, Promotion
    from syncsvc.search import QueryVector, SearchHit
    from syncsvc.settings import Settings
    from syncsvc.status import TargetStatus

_HOMES = {
    "AsyncClient": "client",
    "Client": "client",
    "ConfigurationError": "errors",
    "Coverage": "promote",
    "Estimate": "jobs",
    "FailedRow": "failures",
    "Generation": "models",
    "GenerationCoverage": "promote",
    "GenerationState": "models",
    "Job": "jobs",
    "JobState": "jobs",
    "Metric": "models",
    "NotFoundError": "errors",
    "Promotion": "promote",
    "QueryVector": "search",
    "SearchHit": "search",
    "Settings": "settings",
    "SyncsvcError": "errors",
    "Target": "models",
    "TargetStatus": "status",
    "ValidationError": "errors",
}

__all__ = [
    "AsyncClient",
    "Client",
    "ConfigurationError",
    "Coverage",
    "Estimate",
    "FailedRow",
    "Generation",
    "GenerationCoverage",
    "GenerationState",
    "Job",
    "JobState",
    "Metric",
    "NotFoundError",
    "Promotion",
    "QueryVector",
    "SearchHit",
    "Settings",
    "SyncsvcError",
    "Target",
    "TargetStatus",
    "ValidationError",
]


def __getattr__(name: str) -> Any:
    # Lazy, so importing any submodule does not pull in the client and its dependencies.
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'syncsvc' has no attribute {name!r}")
    return getattr(importlib.import_module(f"syncsvc.{home}"), name)


def __dir__() -> list[str]:
    # The public names, not the helpers this module imports.
    return sorted({*__all__, *(n for n in globals() if n.startswith("__"))})
