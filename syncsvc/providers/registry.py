"""Build providers by their configured name.

A configured provider is a shipped profile plus the user's overrides from ``[providers.NAME]``
in ``syncsvc.toml`` (or ``SYNCSVC_PROVIDERS__NAME__FIELD``): base URL, key variable, budgets,
limits, dimensions and a declared vector space. Build each provider once per process and reuse
it: its connection pool and rate limiter are shared by everything that embeds through it.
"""

from __future__ import annotations

import os
from dataclasses import replace

from syncsvc.core.errors import ValidationError
from syncsvc.core.settings import ProviderSettings, Settings
from syncsvc.core.types import AsyncConn
from syncsvc.embed.profiles import (
    LOCAL,
    ModelProfile,
    OverlongPolicy,
    Protocol,
    ProviderProfile,
    get_profile,
)
from syncsvc.embed.provider import EmbeddingProvider
from syncsvc.providers.local import LocalHashProvider

BUILTIN = "local-hash"
LOCAL_MODEL = "local"
BUILTINS = frozenset({BUILTIN, LOCAL_MODEL})
"""Usable without any configuration: the offline providers."""
KEYLESS_PROFILES = frozenset({"qwen3-openai", "openai-compatible"})
"""Self-hosted servers often run without a key: send none rather than refuse to start."""


def _model_overrides(model: ModelProfile, config: ProviderSettings) -> ModelProfile:
    if config.max_tokens_per_input is not None:
        model = replace(model, max_tokens_per_input=config.max_tokens_per_input)
    if config.dimensions:
        dims = tuple(config.dimensions)
        default = model.default_dimensions if model.default_dimensions in dims else dims[0]
        model = replace(model, dimensions=dims, default_dimensions=default)
    if config.space:
        model = replace(model, space=config.space)
    return model


def apply_settings(profile: ProviderProfile, config: ProviderSettings) -> ProviderProfile:
    """The effective profile: shipped data with the user's overrides."""
    models = {name: _model_overrides(m, config) for name, m in profile.models.items()}
    generic = profile.generic_model
    if generic is not None:
        generic = _model_overrides(generic, config)
    return replace(
        profile,
        base_url=config.base_url or profile.base_url,
        api_key_env=config.api_key_env or profile.api_key_env,
        max_inputs_per_request=config.max_inputs_per_request or profile.max_inputs_per_request,
        models=models,
        generic_model=generic,
        concurrency=config.concurrency,
        rpm=config.rpm if config.rpm is not None else profile.rpm,
        tpm=config.tpm if config.tpm is not None else profile.tpm,
        timeout_seconds=config.timeout_seconds,
        overlong=OverlongPolicy(config.overlong),
    )


def provider_profile(name: str, settings: Settings) -> ProviderProfile:
    """The effective profile of a configured provider name (without opening any connection)."""
    config = settings.providers.get(name)
    if config is None:
        if name in BUILTINS:
            return get_profile(name)
        known = ", ".join(sorted({*BUILTINS, *settings.providers}))
        raise ValidationError(f"unknown provider {name!r} (configured: {known})")
    return apply_settings(get_profile(config.profile), config)


def build_provider(name: str, settings: Settings) -> EmbeddingProvider:
    """Instantiate the provider configured under ``name``.

    A missing API key does not fail here: the provider answers every request with an AUTH
    error naming the variable, so the affected target pauses with a clear reason while other
    targets keep working.
    """
    profile = provider_profile(name, settings)
    if profile.protocol is Protocol.LOCAL:
        if profile.name == LOCAL.name:
            # numpy, tokenizers and wordllama load only when the local model is built.
            from syncsvc.providers.wordllama import WordLlamaProvider

            return WordLlamaProvider(name, profile)
        return LocalHashProvider(name, profile)
    # A key pasted with a trailing newline or CR is never valid: the API would answer a bare 400.
    api_key = (
        (os.environ.get(profile.api_key_env) or "").strip() or None if profile.api_key_env else None
    )
    missing = None
    if not api_key and profile.name not in KEYLESS_PROFILES:
        missing = profile.api_key_env or "(no api_key_env configured)"
    if profile.protocol is Protocol.DASHSCOPE_NATIVE:
        from syncsvc.providers.dashscope import DashScopeNativeProvider

        return DashScopeNativeProvider(name, profile, api_key=api_key, missing_key_env=missing)
    # httpx and prometheus_client load only when a remote provider is built.
    from syncsvc.providers.openai import OpenAICompatibleProvider

    return OpenAICompatibleProvider(name, profile, api_key=api_key, missing_key_env=missing)


def offered_models(name: str, settings: Settings) -> list[ModelProfile]:
    """The models provider ``name`` offers; one named ``*`` stands for any name a host serves."""
    profile = provider_profile(name, settings)
    models = list(profile.models.values())
    if profile.generic_model is not None:
        models.append(replace(profile.generic_model, model="*"))
    return models


async def publish_models(conn: AsyncConn, settings: Settings, only: str | None = None) -> None:
    """Record what the configured providers offer in ``syncsvc.provider_models``, so SQL
    callers (``syncsvc.add_target``, ``syncsvc.request_reembed``) are validated when they call."""
    from syncsvc.db import sqlfiles
    from syncsvc.embed.profiles import Protocol as Wire

    names = [only] if only else sorted({*BUILTINS, *settings.providers})
    async with conn.transaction():
        for name in names:
            profile = provider_profile(name, settings)
            models = offered_models(name, settings)
            for model in models:
                await conn.execute(
                    sqlfiles.query("catalog", "publish_model"),
                    {
                        "provider": name,
                        "model": model.model,
                        "dimensions": list(model.dimensions),
                        "default_dimensions": model.default_dimensions,
                        "sparse": model.supports_sparse
                        and profile.protocol is Wire.DASHSCOPE_NATIVE,
                    },
                )
            await conn.execute(
                sqlfiles.query("catalog", "unpublish_models"),
                {"provider": name, "models": [m.model for m in models]},
            )
