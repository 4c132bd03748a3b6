"""Provider profiles: each model's documented limits as data, not code paths."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Protocol(StrEnum):
    LOCAL = "local"
    OPENAI = "openai"
    """OpenAI-compatible ``POST {base}/embeddings`` (DashScope compatible mode, gateways, vLLM...)."""
    DASHSCOPE_NATIVE = "dashscope-native"


@dataclass(frozen=True)
class ModelProfile:
    model: str
    dimensions: tuple[int, ...]
    default_dimensions: int
    max_tokens_per_input: int
    send_dimensions: bool = True
    price_per_million_tokens: float = 0.0
    space: str | None = None
    """Vector-space family; models reached through different hosts share it only if declared."""
    query_instruction_format: str | None = None
    """How queries are instructed, e.g. 'Instruct: {instruct}\\nQuery:{query}' for Qwen3 hosts."""


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    protocol: Protocol
    base_url: str | None
    max_inputs_per_request: int
    models: dict[str, ModelProfile] = field(default_factory=dict)
    max_tokens_per_request: int | None = None
    api_key_env: str | None = None

    def model(self, name: str) -> ModelProfile:
        from syncsvc.errors import ValidationError

        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models)) or "none"
            raise ValidationError(
                f"provider profile {self.name!r} does not know model {name!r} (known: {known})"
            ) from None


LOCAL_HASH = ProviderProfile(
    name="local-hash",
    protocol=Protocol.LOCAL,
    base_url=None,
    max_inputs_per_request=10,
    models={
        "local-hash": ModelProfile(
            model="local-hash",
            dimensions=(2048, 1536, 1024, 768, 512, 256, 128, 64, 4096, 2560),
            default_dimensions=1024,
            max_tokens_per_input=8192,
            space="local-hash",
        )
    },
)

PROFILES: dict[str, ProviderProfile] = {LOCAL_HASH.name: LOCAL_HASH}


def get_profile(name: str) -> ProviderProfile:
    from syncsvc.errors import ValidationError

    try:
        return PROFILES[name]
    except KeyError:
        raise ValidationError(
            f"unknown provider profile {name!r} (known: {', '.join(sorted(PROFILES))})"
        ) from None
