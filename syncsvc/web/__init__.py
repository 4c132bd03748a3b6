"""The daemon's web surface: Prometheus metrics, health probes and the admin page."""

from syncsvc.web.app import create_app
from syncsvc.web.auth import AdminAccess
from syncsvc.web.server import WebService, parse_address

__all__ = ["AdminAccess", "WebService", "create_app", "parse_address"]
