"""From many texts to vectors: packing into requests, dedupe, concurrency, retry, bisection.

The worker hands an ``Embedder`` the texts of one round; it returns one outcome per input and
never raises for a single bad input. Only an authentication-class error, which no retry can fix,
escapes as ``ProviderPaused`` so the caller can pause the target instead of burning attempts.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from syncsvc.models import TextType
from syncsvc.providers.base import (
    EmbeddingProvider,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorKind,
    ProviderError,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbedInput:
    key: Hashable
    text: str


@dataclass(frozen=True)
class Embedded:
    vectors: tuple[tuple[float, ...], ...]
    """One vector per chunk; a single chunk unless the overlong policy is 'chunk'."""
    tokens: int
    truncated: bool = False
    request_id: str | None = None


@dataclass(frozen=True)
class EmbedFailure:
    message: str
    permanent: bool
    """True when retrying the same text cannot help (the API rejected this input)."""
    request_id: str | None = None


Outcome = Embedded | EmbedFailure


class ProviderPaused(Exception):
    """The provider refuses every request (bad key, no access, arrears): a human must act."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class EmbedSpec:
    """What a generation asks of its provider."""

    model: str
    dimensions: int
    text_type: TextType = TextType.DOCUMENT
    instruct: str | None = None


class Embedder:
    """Embeds batches of texts through one provider with one generation's parameters."""

    def __init__(
        self,
        provider: EmbeddingProvider,
        spec: EmbedSpec,
        *,
        concurrency: int = 8,
        request_retries: int = 3,
        backoff_base: float = 0.2,
    ) -> None:
        self.provider = provider
        self.spec = spec
        self._semaphore = asyncio.Semaphore(concurrency)
        self._request_retries = request_retries
        self._backoff_base = backoff_base

    async def embed(self, inputs: Sequence[EmbedInput]) -> dict[Hashable, Outcome]:
        """Embed every input; identical texts are sent once."""
        by_text: dict[str, list[Hashable]] = {}
        for item in inputs:
            by_text.setdefault(item.text, []).append(item.key)
        texts = list(by_text)
        size = self.provider.profile.max_inputs_per_request
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        results = await asyncio.gather(*(self._embed_batch(b) for b in batches))
        outcomes: dict[Hashable, Outcome] = {}
        for batch_result in results:
            for text, outcome in batch_result.items():
                for key in by_text[text]:
                    outcomes[key] = outcome
        return outcomes

    async def _embed_batch(self, texts: list[str]) -> dict[str, Outcome]:
        try:
            response = await self._request(texts)
        except ProviderError as error:
            if error.kind is ErrorKind.BAD_INPUT:
                if len(texts) == 1:
                    failure = EmbedFailure(str(error), permanent=True, request_id=error.request_id)
                    return {texts[0]: failure}
                # Split to isolate the offending input(s); the rest still succeed.
                half = len(texts) // 2
                left, right = await asyncio.gather(
                    self._embed_batch(texts[:half]), self._embed_batch(texts[half:])
                )
                return {**left, **right}
            failure = EmbedFailure(str(error), permanent=False, request_id=error.request_id)
            return dict.fromkeys(texts, failure)
        per_input_tokens = max(1, response.total_tokens // max(1, len(texts)))
        return {
            text: Embedded(
                vectors=(vector,), tokens=per_input_tokens, request_id=response.request_id
            )
            for text, vector in zip(texts, response.vectors, strict=True)
        }

    async def _request(self, texts: list[str]) -> EmbeddingResponse:
        request = EmbeddingRequest(
            texts=tuple(texts),
            model=self.spec.model,
            dimensions=self.spec.dimensions,
            text_type=self.spec.text_type,
            instruct=self.spec.instruct,
        )
        attempt = 0
        while True:
            try:
                async with self._semaphore:
                    response = await self.provider.embed(request)
                validate(response, len(texts), self.spec.dimensions)
                return response
            except ProviderError as error:
                if error.kind is ErrorKind.AUTH:
                    raise ProviderPaused(error) from error
                if error.kind is ErrorKind.BAD_INPUT or attempt >= self._request_retries:
                    raise
                delay = error.retry_after or self._backoff_base * 2**attempt
                attempt += 1
                logger.warning("embedding request failed (%s); retrying in %.2fs", error, delay)
                await asyncio.sleep(delay * (0.5 + random.random()))


def validate(response: EmbeddingResponse, count: int, dimensions: int) -> None:
    """Reject a response that could corrupt the vector space: wrong count, length, or NaNs."""
    if len(response.vectors) != count:
        raise ProviderError(
            ErrorKind.RETRYABLE,
            f"response has {len(response.vectors)} vectors for {count} inputs",
            code="BadResponse",
            request_id=response.request_id,
        )
    for vector in response.vectors:
        if len(vector) != dimensions:
            raise ProviderError(
                ErrorKind.RETRYABLE,
                f"response vector has {len(vector)} dimensions, expected {dimensions}",
                code="BadResponse",
                request_id=response.request_id,
            )
        if not all(v == v and abs(v) != float("inf") for v in vector):
            raise ProviderError(
                ErrorKind.RETRYABLE,
                "response vector has non-finite values",
                code="BadResponse",
                request_id=response.request_id,
            )
