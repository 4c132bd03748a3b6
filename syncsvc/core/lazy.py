"""Modules that load on first attribute access, so ``syncsvc --help`` stays fast.

The CLI registers every command at start; a command module that needs numpy, Starlette or
an HTTP client at run time names it here instead, and pays for it only when the command runs.
Import the same module under ``TYPE_CHECKING`` for the types (and the import-graph test).
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


def lazy_module(name: str) -> ModuleType:
    """``name``, imported but not executed until one of its attributes is used."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"no module named {name!r}", name=name)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    return module
