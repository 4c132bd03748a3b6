"""A DashScope-compatible embeddings API simulator for tests, benchmarks and rehearsals.

Names load on first use: ``syncsvc simulate --help`` must not pull in Starlette and uvicorn.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncsvc.simulator.app import SimulatorConfig, create_app
    from syncsvc.simulator.faults import FaultKind, FaultRule, parse_fault
    from syncsvc.simulator.server import SimulatorClient, SimulatorThread, run_in_thread, serve

__all__ = [
    "FaultKind",
    "FaultRule",
    "SimulatorClient",
    "SimulatorConfig",
    "SimulatorThread",
    "create_app",
    "parse_fault",
    "run_in_thread",
    "serve",
]

_HOMES = {
    "SimulatorConfig": "syncsvc.simulator.app",
    "create_app": "syncsvc.simulator.app",
    "FaultKind": "syncsvc.simulator.faults",
    "FaultRule": "syncsvc.simulator.faults",
    "parse_fault": "syncsvc.simulator.faults",
    "SimulatorClient": "syncsvc.simulator.server",
    "SimulatorThread": "syncsvc.simulator.server",
    "run_in_thread": "syncsvc.simulator.server",
    "serve": "syncsvc.simulator.server",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
