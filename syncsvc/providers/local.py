"""The offline provider: the lexical embedder behind the provider Protocol."""

from __future__ import annotations

from syncsvc.embed import lexical
from syncsvc.embed.profiles import LOCAL_HASH, ProviderProfile
from syncsvc.embed.provider import (
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorKind,
    ProviderError,
    proceed,
)


class InProcessProvider:
    """What the offline providers share: counters, the batch limit, nothing to close."""

    def __init__(self, name: str, profile: ProviderProfile) -> None:
        self._name = name
        self._profile = profile
        self.calls = 0
        """Requests served, so callers (and tests) can prove no API call was made."""
        self.inputs = 0
        """Texts embedded over all requests."""

    @property
    def name(self) -> str:
        return self._name

    @property
    def profile(self) -> ProviderProfile:
        return self._profile

    def _accept(self, request: EmbeddingRequest) -> None:
        """Refuse what the hosted APIs refuse (an oversized batch), then count the request."""
        if len(request.texts) > self._profile.max_inputs_per_request:
            raise ProviderError(
                ErrorKind.BAD_INPUT,
                f"batch size is invalid, it should not be larger than "
                f"{self._profile.max_inputs_per_request}",
                code="InvalidParameter",
                status=400,
            )
        self.calls += 1
        self.inputs += len(request.texts)

    async def aclose(self) -> None:
        return None


class LocalHashProvider(InProcessProvider):
    """Deterministic, free and instant; used for tests, the demo and offline installs."""

    def __init__(self, name: str = "local-hash", profile: ProviderProfile = LOCAL_HASH) -> None:
        super().__init__(name, profile)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        await proceed(request)
        self._accept(request)
        vectors = tuple(tuple(lexical.embed(t, request.dimensions)) for t in request.texts)
        tokens = sum(lexical.count_tokens(t) for t in request.texts)
        return EmbeddingResponse(vectors=vectors, total_tokens=tokens)
