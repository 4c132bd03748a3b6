"""The provider port: a single embeddings request and the errors it can raise.

Batching, token budgets, retries and bisection live above this seam (``syncsvc.embed.embedder``);
a provider only turns one request into one API call and classifies what went wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from syncsvc.core.models import TextType
from syncsvc.embed.profiles import ProviderProfile


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: tuple[str, ...]
    model: str
    dimensions: int
    text_type: TextType = TextType.DOCUMENT
    instruct: str | None = None
    sparse: bool = False
    priority: int = 0
    """Queue priority of the rows asked for: lower numbers get a request slot first."""
    proceed: Callable[[], Awaitable[None]] | None = field(default=None, compare=False, repr=False)
    """Awaited right before the request goes out (once its slot is granted); raises
    ``Withdrawn`` when it must not be sent (its generation was cancelled meanwhile)."""
    tenant: int | None = None
    """The target asked for: within a priority, request slots are shared between targets."""


class Withdrawn(Exception):
    """A request was not sent because what it was for no longer wants it."""


async def proceed(request: EmbeddingRequest) -> None:
    """Run the request's last check before sending (providers call this)."""
    if request.proceed is not None:
        await request.proceed()


@dataclass(frozen=True)
class EmbeddingResponse:
    vectors: tuple[tuple[float, ...], ...]
    """One dense vector per input, in input order."""
    total_tokens: int
    request_id: str | None = None
    sparse: tuple[dict[int, float], ...] | None = None


class ErrorKind(StrEnum):
    RETRYABLE = "retryable"
    """Timeouts, connection errors, 5xx, malformed responses: try the same batch again later."""
    RATE_LIMITED = "rate_limited"
    """429: slow down, honour ``retry_after``, then retry the same batch."""
    BAD_INPUT = "bad_input"
    """400 caused by the inputs (e.g. DataInspectionFailed): bisect to find the culprit."""
    AUTH = "auth"
    """401/403/arrearage: no request can succeed until a human acts; pause the target."""


class ProviderError(Exception):
    """A failed request, classified. ``str()`` never contains secrets."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        parts = [f"{self.status} " if self.status else "", self.code or self.kind.value]
        text = "".join(parts) + f": {self.message}"
        if self.request_id:
            text += f" (request_id={self.request_id})"
        return text


class EmbeddingProvider(Protocol):
    """Turns one ``EmbeddingRequest`` into one API call."""

    @property
    def name(self) -> str:
        """The configured provider name (e.g. 'dashscope', 'local-hash')."""
        ...

    @property
    def profile(self) -> ProviderProfile: ...

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Embed ``request.texts``; raise ``ProviderError`` on failure."""
        ...

    async def aclose(self) -> None: ...


ProviderFactory = Callable[[str], EmbeddingProvider]
"""Builds the provider of a configured provider name (``syncsvc.providers.registry``)."""

ProviderWrapper = Callable[[ProviderFactory], ProviderFactory]
"""Wraps a provider factory (e.g. the coordinator's shared rate budget)."""
