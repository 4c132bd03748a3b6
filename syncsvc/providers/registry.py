"""Build providers by their configured name."""

from __future__ import annotations

from syncsvc.errors import ValidationError
from syncsvc.providers.base import EmbeddingProvider
from syncsvc.providers.local import LocalHashProvider
from syncsvc.providers.profiles import ProviderProfile, get_profile
from syncsvc.settings import Settings

BUILTIN = "local-hash"


def provider_profile(name: str, settings: Settings) -> ProviderProfile:
    """The profile a configured provider name uses (without opening any connection)."""
    if name == BUILTIN:
        return get_profile(BUILTIN)
    config = settings.providers.get(name)
    if config is None:
        known = ", ".join(sorted([BUILTIN, *settings.providers]))
        raise ValidationError(f"unknown provider {name!r} (configured: {known})")
    return get_profile(config.profile)


def build_provider(name: str, settings: Settings) -> EmbeddingProvider:
    """Instantiate the provider configured under ``name``."""
    if name == BUILTIN:
        return LocalHashProvider()
    provider_profile(name, settings)
    raise ValidationError(f"provider {name!r}: HTTP providers are not available yet")
