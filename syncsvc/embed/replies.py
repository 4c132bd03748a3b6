"""What a provider's reply must satisfy before it is used, and how one request's bill is shared.

A reply that could corrupt a generation's vector space (a wrong count or length, a NaN, a
string among the numbers) is a retryable fault, never written. APIs report usage per request,
not per input: the bill is shared among the inputs so that the shares add up to it.
"""

from __future__ import annotations

import math

from syncsvc.core.models import SPARSE_DIMENSIONS
from syncsvc.embed.provider import EmbeddingResponse, ErrorKind, ProviderError

_LENGTH_WORDS = ("input length", "too long", "maximum context", "max_tokens", "token limit")


def is_length_error(error: ProviderError) -> bool:
    """A rejection of one input for its length (DashScope: 'Range of input length should be
    [1, 8192]'), which a shorter cut can cure, unlike a content rejection."""
    message = str(error).lower()
    return any(word in message for word in _LENGTH_WORDS)


def apportion(total: int, weights: list[int]) -> list[int]:
    """Share a request's reported usage among its inputs; the shares add up to ``total``."""
    whole = sum(weights) or 1
    shares, running, previous = [], 0.0, 0
    for weight in weights:
        running += total * weight / whole
        share = round(running) - previous
        previous += share
        shares.append(share)
    return shares


def validate(
    response: EmbeddingResponse, count: int, dimensions: int, sparse: bool = False
) -> None:
    """Reject a response that could corrupt the vector space: wrong count, length, or NaNs."""

    def bad(message: str) -> ProviderError:
        return ProviderError(
            ErrorKind.RETRYABLE, message, code="BadResponse", request_id=response.request_id
        )

    if len(response.vectors) != count:
        raise bad(f"response has {len(response.vectors)} vectors for {count} inputs")
    for vector in response.vectors:
        if len(vector) != dimensions:
            raise bad(f"response vector has {len(vector)} dimensions, expected {dimensions}")
        # One C-speed sum: a NaN or an infinity anywhere makes it non-finite, and a string
        # or a null makes it raise.
        try:
            finite = math.isfinite(sum(vector))
        except TypeError:
            raise bad("response vector has non-numeric values") from None
        if not finite:
            raise bad("response vector has non-finite values")
    if sparse and (response.sparse is None or len(response.sparse) != count):
        raise bad("response lacks the sparse vectors asked for")
    for weights in response.sparse or ():
        if weights and not all(0 <= i < SPARSE_DIMENSIONS for i in weights):
            raise bad(f"response sparse vector has an index outside 0..{SPARSE_DIMENSIONS - 1}")
