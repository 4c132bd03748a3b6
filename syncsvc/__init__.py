"""syncsvc: keep PostgreSQL rows embedded in pgvector tables, and search them.

``syncsvc.Client`` (and ``syncsvc.AsyncClient``) administer targets and search them; the
other public names are the typed results they return and the errors they raise. See
docs/python.md.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncsvc.api.client import AsyncClient
    from syncsvc.api.sync import Client
    from syncsvc.core.errors import ConfigurationError, NotFoundError, SyncsvcError, ValidationError
    from syncsvc.core.models import Generation, GenerationState, Metric, Target
    from syncsvc.core.settings import Settings
    from syncsvc.jobs.model import Estimate, Job, JobState
    from syncsvc.observe.status import TargetStatus
    from syncsvc.queue.failures import FailedRow
    from syncsvc.search.engine import QueryVector, SearchHit
    from syncsvc.store.promote import Coverage, GenerationCoverage, Promotion

_HOMES = {
    "AsyncClient": "api.client",
    "Client": "api.sync",
    "ConfigurationError": "core.errors",
    "Coverage": "store.promote",
    "Estimate": "jobs.model",
    "FailedRow": "queue.failures",
    "Generation": "core.models",
    "GenerationCoverage": "store.promote",
    "GenerationState": "core.models",
    "Job": "jobs.model",
    "JobState": "jobs.model",
    "Metric": "core.models",
    "NotFoundError": "core.errors",
    "Promotion": "store.promote",
    "QueryVector": "search.engine",
    "SearchHit": "search.engine",
    "Settings": "core.settings",
    "SyncsvcError": "core.errors",
    "Target": "core.models",
    "TargetStatus": "observe.status",
    "ValidationError": "core.errors",
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
