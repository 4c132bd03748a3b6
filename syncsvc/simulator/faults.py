"""Fault injection rules for the simulator, settable at start (CLI) and at run time (admin route).

A rule fires on the next ``count`` matching requests (or on every one when ``count`` is None),
each with probability ``rate``: ``count`` makes tests deterministic, ``rate`` makes rehearsals
realistic (e.g. 2% of requests get a 500).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class FaultKind(StrEnum):
    RATE_LIMIT = "429"
    """429 ``limit_requests`` / ``Throttling.RateQuota``; Retry-After only if configured."""
    SERVER_ERROR = "500"
    HANG = "hang"
    """Hold the request for ``hang_seconds`` before answering: the client should time out."""
    MALFORMED = "malformed"
    """200 with a truncated JSON body."""
    BAD_VECTOR = "bad_vector"
    """200 with vectors one dimension short."""
    NAN = "nan"
    """200 with a NaN in the first vector."""
    MISSING = "missing"
    """200 with the last embedding left out."""
    ARREARAGE = "arrearage"
    """400 ``Arrearage``: the account is overdue; an auth-class error despite the 400."""
    UNAUTHORIZED = "401"
    """401 ``InvalidApiKey`` whatever the key."""
    BASE64 = "base64"
    """200 with base64 float32 embeddings although ``float`` was asked for (some gateways)."""


ROUTES = ("compatible", "native", "openai")


@dataclass(frozen=True)
class FaultRule:
    kind: FaultKind
    count: int | None = None
    """How many requests this rule hits; None for every request until cleared."""
    rate: float = 1.0
    """Probability that a matching request is hit."""
    retry_after: float | None = None
    """Seconds sent as ``Retry-After`` with a 429 (none when unset)."""
    retry_after_ms: float | None = None
    """Milliseconds sent as ``retry-after-ms`` with a 429."""
    hang_seconds: float = 30.0
    route: str | None = None
    """Only requests on this route ('compatible', 'native', 'openai')."""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultRule:
        allowed = {"count", "rate", "retry_after", "retry_after_ms", "hang_seconds", "route"}
        unknown = set(data) - allowed - {"kind"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if data.get("route") not in (None, *ROUTES):
            raise ValueError(f"route must be one of {', '.join(ROUTES)}")
        fields: dict[str, Any] = {}
        for key in allowed & set(data):
            value = data[key]
            fields[key] = value if key == "route" or value is None else float(value)
        if "count" in fields and fields["count"] is not None:
            fields["count"] = int(fields["count"])
        return cls(kind=FaultKind(str(data["kind"])), **fields)


def parse_fault(spec: str) -> FaultRule:
    """Parse the CLI form ``KIND[:key=value,...]``, e.g. ``429:rate=0.05,retry_after=1``."""
    kind, _, rest = spec.partition(":")
    data: dict[str, Any] = {"kind": kind.strip()}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep:
            raise ValueError(f"fault option {part!r} must look like key=value")
        data[key.strip()] = value.strip()
    try:
        return FaultRule.from_json(data)
    except ValueError as error:
        kinds = ", ".join(k.value for k in FaultKind)
        raise ValueError(f"bad fault {spec!r}: {error} (kinds: {kinds})") from None


class FaultBook:
    """The active rules and how many hits each has left; used from the server's event loop."""

    def __init__(
        self, rules: tuple[FaultRule, ...] = (), poison: tuple[str, ...] = (), seed: int = 0
    ) -> None:
        self._random = random.Random(seed)
        self._rules: list[tuple[FaultRule, list[int | None]]] = []
        self.poison: tuple[str, ...] = ()
        self.replace(rules, poison)

    def replace(self, rules: tuple[FaultRule, ...], poison: tuple[str, ...]) -> None:
        self._rules = [(rule, [rule.count]) for rule in rules]
        self.poison = tuple(p for p in poison if p)

    def draw(self, route: str) -> FaultRule | None:
        """The rule hitting this request, if any; consumes one of its hits."""
        for rule, remaining in self._rules:
            if rule.route is not None and rule.route != route:
                continue
            left = remaining[0]
            if left is not None and left <= 0:
                continue
            if rule.rate < 1.0 and self._random.random() >= rule.rate:
                continue
            if left is not None:
                remaining[0] = left - 1
            return rule
        return None

    def poisoned(self, texts: list[str]) -> bool:
        return any(p in text for p in self.poison for text in texts)

    def to_json(self) -> dict[str, Any]:
        return {
            "faults": [
                {**rule.to_json(), "remaining": remaining[0]} for rule, remaining in self._rules
            ],
            "poison": list(self.poison),
        }
