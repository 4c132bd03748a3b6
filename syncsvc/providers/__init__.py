"""Embedding providers: one request to one API, behind the ``EmbeddingProvider`` Protocol."""

from syncsvc.providers.base import (
    EmbeddingProvider,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorKind,
    ProviderError,
)

__all__ = [
    "EmbeddingProvider",
    "EmbeddingRequest",
    "EmbeddingResponse",
    "ErrorKind",
    "ProviderError",
]
