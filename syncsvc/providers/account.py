"""What every HTTP provider shares: one API account's client, rate limiter and key check."""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from syncsvc.core.errors import ConfigurationError
from syncsvc.embed.profiles import ProviderProfile
from syncsvc.embed.provider import ErrorKind, ProviderError
from syncsvc.embed.ratelimit import RateLimiter
from syncsvc.embed.tokens import counter
from syncsvc.providers.http import HttpClient


class HttpProvider:
    """Base of the wire-protocol providers; subclasses implement ``embed``."""

    def __init__(
        self,
        name: str,
        profile: ProviderProfile,
        *,
        api_key: str | None,
        missing_key_env: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not profile.base_url:
            raise ConfigurationError(f"provider {name!r}: set base_url for profile {profile.name}")
        self._name = name
        self._profile = profile
        self._missing_key_env = missing_key_env
        self.http = HttpClient(
            profile.base_url,
            api_key=api_key,
            timeout=profile.timeout_seconds,
            concurrency=profile.concurrency,
            limiter=RateLimiter(profile.rpm, profile.tpm),
            transport=transport,
        )
        self._tokens = counter(profile.tokenizer)

    def __repr__(self) -> str:
        # Never the key: only names.
        return f"{type(self).__name__}({self._name!r}, profile={self._profile.name!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def profile(self) -> ProviderProfile:
        return self._profile

    @property
    def limiter(self) -> RateLimiter | None:
        return self.http.limiter

    def _check_key(self) -> None:
        """A missing key refuses every request: pause the target rather than burn attempts."""
        if self._missing_key_env:
            raise ProviderError(
                ErrorKind.AUTH,
                f"environment variable {self._missing_key_env} is not set: set it to the API "
                f"key of provider {self._name}",
                code="MissingApiKey",
            )

    def _budget_tokens(self, texts: Sequence[str]) -> int:
        """Tokens to charge the TPM budget; counting is skipped when there is none."""
        if self._profile.tpm is None:
            return 0
        return sum(self._tokens.count(t) for t in texts)

    async def aclose(self) -> None:
        await self.http.aclose()
