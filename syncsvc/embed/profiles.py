"""Provider profiles: each model's documented limits as data, not code paths.

Figures come from the vendors' pages kept in ``shared/reference``. Limits have changed over time
(DashScope's batch size went 6 -> 20 -> 10), which is why they live here and can be overridden
per configured provider instead of being spread through the code.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from syncsvc.embed.tokens import TokenizerKind


class Protocol(StrEnum):
    LOCAL = "local"
    OPENAI = "openai"
    """OpenAI-compatible ``POST {base}/embeddings``: DashScope compatible mode, gateways, vLLM."""
    DASHSCOPE_NATIVE = "dashscope-native"
    """``POST {base}/services/embeddings/text-embedding/text-embedding``."""


class OverlongPolicy(StrEnum):
    TRUNCATE = "truncate"
    """Cut the input to the per-input token limit; the row records ``truncated``."""
    CHUNK = "chunk"
    """Split the input into pieces within the limit; the row gets one vector per piece."""


QWEN3_QUERY_FORMAT = "Instruct: {instruct}\nQuery:{query}"
QWEN3_DEFAULT_INSTRUCT = (
    "Given a web search query, retrieve relevant passages that answer the query"
)


@dataclass(frozen=True)
class ModelProfile:
    model: str
    dimensions: tuple[int, ...]
    default_dimensions: int
    max_tokens_per_input: int
    send_dimensions: bool = True
    """False when the host rejects a ``dimensions`` field: it is then sent only if non-default."""
    price_per_million_tokens: float = 0.0
    space: str | None = None
    """Vector-space family; models reached through different hosts share it only if declared."""
    query_instruction_format: str | None = None
    """Client-side query template, e.g. Qwen3's 'Instruct: {instruct}\\nQuery:{query}'."""
    default_instruct: str | None = None
    """Instruction used for queries when the generation names none (client-side formats only)."""
    supports_sparse: bool = False
    """The native API can also return a sparse vector (``output_type: dense&sparse``)."""


@dataclass(frozen=True)
class ProviderProfile:
    name: str
    protocol: Protocol
    base_url: str | None
    max_inputs_per_request: int
    models: dict[str, ModelProfile] = field(default_factory=dict)
    max_tokens_per_request: int | None = None
    api_key_env: str | None = None
    region: str | None = None
    tokenizer: TokenizerKind = TokenizerKind.QWEN
    generic_model: ModelProfile | None = None
    """Template for model names not listed (hosts whose models the user chooses)."""
    # What one configured account may do; the shipped value is a default, settings override it.
    concurrency: int = 8
    rpm: int | None = None
    tpm: int | None = None
    timeout_seconds: float = 30.0
    overlong: OverlongPolicy = OverlongPolicy.TRUNCATE

    def model(self, name: str) -> ModelProfile:
        from syncsvc.core.errors import ValidationError

        found = self.models.get(name)
        if found is not None:
            return found
        if self.generic_model is not None:
            return replace(
                self.generic_model,
                model=name,
                space=self.generic_model.space or f"{self.name}/{name}",
            )
        known = ", ".join(sorted(self.models)) or "none"
        raise ValidationError(
            f"provider profile {self.name!r} does not know model {name!r} (known: {known})"
        )


LOCAL_HASH = ProviderProfile(
    name="local-hash",
    protocol=Protocol.LOCAL,
    base_url=None,
    max_inputs_per_request=10,
    tokenizer=TokenizerKind.LEXICAL,
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

WORDLLAMA_MODEL = "wordllama-l2-supercat"

LOCAL = ProviderProfile(
    name="local",
    protocol=Protocol.LOCAL,
    base_url=None,
    # In-process and ~25,000 short texts/s on one core: bigger batches cost nothing.
    max_inputs_per_request=64,
    tokenizer=TokenizerKind.WORDLLAMA,
    models={
        WORDLLAMA_MODEL: ModelProfile(
            model=WORDLLAMA_MODEL,
            dimensions=(256, 128, 64),
            default_dimensions=256,
            # Mean pooling has no window; past a few thousand tokens a text is one blur.
            max_tokens_per_input=8192,
            space="wordllama/l2_supercat",
        )
    },
)
"""WordLlama's l2_supercat: static token embeddings from a large model's, mean-pooled
(Matryoshka: the first 128 or 64 dimensions are a coarser model of their own)."""

# --- Alibaba Cloud Model Studio (DashScope) ---------------------------------------------------

DASHSCOPE_KEY_ENV = "DASHSCOPE_API_KEY"
DASHSCOPE_MAX_INPUTS = 10
DASHSCOPE_MAX_TOKENS = 8192
V4_DIMENSIONS = (2048, 1536, 1024, 768, 512, 256, 128, 64)
V3_DIMENSIONS = (1024, 768, 512)


def _dashscope_models(v4_price: float, with_v3: bool) -> dict[str, ModelProfile]:
    # One vector space per model whatever the region or wire protocol: it is the same service.
    models = {
        "text-embedding-v4": ModelProfile(
            model="text-embedding-v4",
            dimensions=V4_DIMENSIONS,
            default_dimensions=1024,
            max_tokens_per_input=DASHSCOPE_MAX_TOKENS,
            price_per_million_tokens=v4_price,
            space="dashscope/text-embedding-v4",
            supports_sparse=True,
        )
    }
    if with_v3:
        models["text-embedding-v3"] = ModelProfile(
            model="text-embedding-v3",
            dimensions=V3_DIMENSIONS,
            default_dimensions=1024,
            max_tokens_per_input=DASHSCOPE_MAX_TOKENS,
            price_per_million_tokens=0.07,
            space="dashscope/text-embedding-v3",
            supports_sparse=True,
        )
    return models


_DASHSCOPE_REGIONS: tuple[tuple[str, str, str, float, bool], ...] = (
    # (profile suffix, region, host, v4 price per 1M tokens, v3 listed for the region)
    ("intl", "ap-southeast-1 (Singapore)", "https://dashscope-intl.aliyuncs.com", 0.07, True),
    ("cn", "cn-beijing (Beijing)", "https://dashscope.aliyuncs.com", 0.072, True),
    ("hk", "cn-hongkong (Hong Kong)", "https://cn-hongkong.dashscope.aliyuncs.com", 0.07, False),
)


def _dashscope_profiles() -> list[ProviderProfile]:
    profiles: list[ProviderProfile] = []
    for suffix, region, host, price, with_v3 in _DASHSCOPE_REGIONS:
        models = _dashscope_models(price, with_v3)
        for protocol, path, tail in (
            (Protocol.OPENAI, "/compatible-mode/v1", ""),
            (Protocol.DASHSCOPE_NATIVE, "/api/v1", "-native"),
        ):
            profiles.append(
                ProviderProfile(
                    name=f"dashscope-{suffix}{tail}",
                    protocol=protocol,
                    base_url=f"{host}{path}",
                    max_inputs_per_request=DASHSCOPE_MAX_INPUTS,
                    models=models,
                    api_key_env=DASHSCOPE_KEY_ENV,
                    region=region,
                )
            )
    return profiles


# --- Gateways reselling text-embedding-v4 -----------------------------------------------------

AIMLAPI = ProviderProfile(
    name="aimlapi",
    protocol=Protocol.OPENAI,
    base_url="https://api.aimlapi.com/v1",
    max_inputs_per_request=DASHSCOPE_MAX_INPUTS,
    api_key_env="AIMLAPI_API_KEY",
    models={
        "alibaba/qwen-text-embedding-v4": ModelProfile(
            model="alibaba/qwen-text-embedding-v4",
            dimensions=V4_DIMENSIONS,
            default_dimensions=1024,
            max_tokens_per_input=DASHSCOPE_MAX_TOKENS,
            # The gateway's page lists no price; 0 means "unknown", not free.
            price_per_million_tokens=0.0,
            space="aimlapi/alibaba/qwen-text-embedding-v4",
        )
    },
)

THEROUTER = ProviderProfile(
    name="therouter",
    protocol=Protocol.OPENAI,
    base_url="https://api.therouter.ai/v1",
    max_inputs_per_request=DASHSCOPE_MAX_INPUTS,
    api_key_env="THE_ROUTER_API_KEY",
    models={
        "qwen/text-embedding-v4": ModelProfile(
            model="qwen/text-embedding-v4",
            dimensions=V4_DIMENSIONS,
            default_dimensions=1024,
            max_tokens_per_input=DASHSCOPE_MAX_TOKENS,
            price_per_million_tokens=0.144,
            space="therouter/qwen/text-embedding-v4",
        )
    },
)

# --- Self-hosted open weights (vLLM, TEI, Ollama...) ------------------------------------------

_QWEN3_SIZES = (("0.6B", 1024), ("4B", 2560), ("8B", 4096))
_QWEN3_CONTEXT = 32_768


def _qwen3_model(size: str, native: int) -> ModelProfile:
    name = f"Qwen/Qwen3-Embedding-{size}"
    return ModelProfile(
        model=name,
        dimensions=(native,),
        default_dimensions=native,
        max_tokens_per_input=_QWEN3_CONTEXT,
        # Many hosts reject ``dimensions`` for a non-Matryoshka config: send it only when asked
        # for a size other than the native one.
        send_dimensions=False,
        space=f"qwen3-embedding/{name}",
        query_instruction_format=QWEN3_QUERY_FORMAT,
        default_instruct=QWEN3_DEFAULT_INSTRUCT,
    )


QWEN3_HOST = ProviderProfile(
    name="qwen3-openai",
    protocol=Protocol.OPENAI,
    base_url="http://127.0.0.1:8000/v1",
    max_inputs_per_request=32,
    api_key_env="QWEN3_API_KEY",
    models={m.model: m for m in (_qwen3_model(s, d) for s, d in _QWEN3_SIZES)},
)

OPENAI_COMPATIBLE = ProviderProfile(
    name="openai-compatible",
    protocol=Protocol.OPENAI,
    base_url=None,
    max_inputs_per_request=16,
    api_key_env="OPENAI_API_KEY",
    generic_model=ModelProfile(
        model="*",
        dimensions=(1024,),
        default_dimensions=1024,
        max_tokens_per_input=8192,
        send_dimensions=False,
    ),
)

PROFILES: dict[str, ProviderProfile] = {
    p.name: p
    for p in (
        LOCAL_HASH,
        LOCAL,
        *_dashscope_profiles(),
        AIMLAPI,
        THEROUTER,
        QWEN3_HOST,
        OPENAI_COMPATIBLE,
    )
}


def get_profile(name: str) -> ProviderProfile:
    from syncsvc.core.errors import ValidationError

    try:
        return PROFILES[name]
    except KeyError:
        raise ValidationError(
            f"unknown provider profile {name!r} (known: {', '.join(sorted(PROFILES))})"
        ) from None
