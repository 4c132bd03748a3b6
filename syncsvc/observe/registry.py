"""The Prometheus registry every syncsvc metric is registered in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

REGISTRY = CollectorRegistry(auto_describe=True)
"""syncsvc's own registry: no default process collectors from other libraries' imports."""
