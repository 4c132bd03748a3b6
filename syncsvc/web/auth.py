"""Who may use the admin page.

The page is off unless ``admin_enabled``. With a token configured (the variable named by
``admin_token_env``), every admin request must carry it as ``Authorization: Bearer <token>`` or
in the HttpOnly, SameSite=Strict cookie set by ``/login``. Without a token the page is served
only on a loopback address. State-changing requests must also come from the page itself
(``Origin``/``Sec-Fetch-Site``), so another web site cannot drive the buttons of a browser
that happens to be logged in or running on the same host.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from syncsvc.core.settings import Settings

COOKIE = "syncsvc_admin"


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The host of a ``Host`` header, without port or IPv6 brackets, lower-cased."""
    if header.startswith("["):
        return header[1:].partition("]")[0].lower()
    return header.rpartition(":")[0].lower() if header.count(":") == 1 else header.lower()


@dataclass(frozen=True)
class AdminAccess:
    """Whether the admin page is served, and the token it demands (None: loopback only).

    ``hosts`` are the ``Host`` names the page answers to besides loopback ones: the bound
    address and ``admin_allowed_hosts``. Without a token every other name is refused, so a
    DNS-rebinding page (evil.example resolving to 127.0.0.1) cannot reach the buttons.
    """

    enabled: bool
    token: str | None
    reason: str = ""
    hosts: frozenset[str] = frozenset()
    hosts_configured: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, host: str) -> AdminAccess:
        if not settings.admin_enabled:
            return cls(False, None, "the admin page is off (set admin_enabled)")
        token = os.environ.get(settings.admin_token_env) or None
        if token is None and not is_loopback(host):
            return cls(
                False,
                None,
                f"the admin page needs a token when bound to {host}: "
                f"set {settings.admin_token_env}",
            )
        allowed = frozenset(h.lower() for h in settings.admin_allowed_hosts)
        return cls(True, token, hosts=allowed | {host.lower()}, hosts_configured=bool(allowed))

    def host_allowed(self, request: Request) -> bool:
        name = host_name(request.headers.get("host", ""))
        if name in self.hosts or (is_loopback(name) and not self.hosts_configured):
            return True
        # Behind a token the name alone proves nothing either way, unless a list was given.
        return self.token is not None and not self.hosts_configured

    def authorized(self, request: Request) -> bool:
        if not self.enabled:
            return False
        if self.token is None:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and _equal(value.strip(), self.token):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and _equal(cookie, self.token)

    def check_token(self, candidate: str) -> bool:
        return self.token is not None and _equal(candidate, self.token)


def _equal(given: str, token: str) -> bool:
    # As bytes: compare_digest refuses non-ASCII str (a 500 for a typed "é").
    return hmac.compare_digest(given.encode(), token.encode())


def same_origin(request: Request) -> bool:
    """True unless the browser says the request came from another site."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")
