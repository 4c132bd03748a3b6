"""A DashScope-compatible embeddings API simulator for tests, benchmarks and rehearsals."""

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
