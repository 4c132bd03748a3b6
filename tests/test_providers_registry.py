"""Profiles as data and the registry that applies ``[providers.NAME]`` settings to them."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncsvc.core.errors import ValidationError
from syncsvc.core.settings import ProviderSettings, Settings
from syncsvc.embed.profiles import PROFILES, OverlongPolicy, Protocol, get_profile
from syncsvc.providers.dashscope import DashScopeNativeProvider
from syncsvc.providers.local import LocalHashProvider
from syncsvc.providers.openai import OpenAICompatibleProvider
from syncsvc.providers.registry import build_provider, provider_profile


def test_dashscope_profiles_carry_the_documented_limits() -> None:
    for region, host in (
        ("intl", "https://dashscope-intl.aliyuncs.com"),
        ("cn", "https://dashscope.aliyuncs.com"),
        ("hk", "https://cn-hongkong.dashscope.aliyuncs.com"),
    ):
        compatible = get_profile(f"dashscope-{region}")
        native = get_profile(f"dashscope-{region}-native")
        assert compatible.base_url == f"{host}/compatible-mode/v1"
        assert native.base_url == f"{host}/api/v1"
        assert (compatible.protocol, native.protocol) == (
            Protocol.OPENAI,
            Protocol.DASHSCOPE_NATIVE,
        )
        for profile in (compatible, native):
            assert profile.max_inputs_per_request == 10
            assert profile.api_key_env == "DASHSCOPE_API_KEY"
            v4 = profile.model("text-embedding-v4")
            assert v4.dimensions == (2048, 1536, 1024, 768, 512, 256, 128, 64)
            assert (v4.default_dimensions, v4.max_tokens_per_input) == (1024, 8192)
            assert v4.space == "dashscope/text-embedding-v4"
    assert get_profile("dashscope-intl").model("text-embedding-v3").dimensions == (1024, 768, 512)
    assert get_profile("dashscope-cn").model("text-embedding-v4").price_per_million_tokens == 0.072
    assert get_profile("dashscope-intl").model("text-embedding-v4").price_per_million_tokens == 0.07


def test_gateways_and_qwen3_hosts_are_their_own_spaces() -> None:
    aiml = get_profile("aimlapi").model("alibaba/qwen-text-embedding-v4")
    router = get_profile("therouter").model("qwen/text-embedding-v4")
    assert get_profile("aimlapi").base_url == "https://api.aimlapi.com/v1"
    assert get_profile("therouter").base_url == "https://api.therouter.ai/v1"
    assert len({aiml.space, router.space, "dashscope/text-embedding-v4"}) == 3
    qwen3 = get_profile("qwen3-openai")
    natives = {m.model: m.default_dimensions for m in qwen3.models.values()}
    assert natives == {
        "Qwen/Qwen3-Embedding-0.6B": 1024,
        "Qwen/Qwen3-Embedding-4B": 2560,
        "Qwen/Qwen3-Embedding-8B": 4096,
    }
    model = qwen3.model("Qwen/Qwen3-Embedding-8B")
    assert model.max_tokens_per_input == 32_768
    assert model.query_instruction_format == "Instruct: {instruct}\nQuery:{query}"


def test_settings_override_the_profile() -> None:
    settings = Settings(
        providers={
            "router": ProviderSettings(
                profile="aimlapi", space="dashscope/text-embedding-v4", rpm=600, tpm=100_000,
                concurrency=3, overlong="chunk", max_inputs_per_request=6,
                base_url="http://127.0.0.1:1/v1",
            )
        }
    )  # fmt: skip
    profile = provider_profile("router", settings)
    assert profile.model("alibaba/qwen-text-embedding-v4").space == "dashscope/text-embedding-v4"
    assert (profile.rpm, profile.tpm, profile.concurrency) == (600, 100_000, 3)
    assert profile.overlong is OverlongPolicy.CHUNK
    assert profile.max_inputs_per_request == 6
    assert profile.base_url == "http://127.0.0.1:1/v1"
    assert PROFILES["aimlapi"].max_inputs_per_request == 10  # shipped data untouched


def test_generic_openai_compatible_takes_limits_from_settings() -> None:
    settings = Settings(
        providers={
            "tei": ProviderSettings(
                profile="openai-compatible", base_url="http://127.0.0.1:8080/v1",
                dimensions=[768, 256], max_tokens_per_input=512, max_inputs_per_request=64,
            )
        }
    )  # fmt: skip
    profile = provider_profile("tei", settings)
    model = profile.model("BAAI/bge-base-en")
    assert (model.dimensions, model.default_dimensions) == ((768, 256), 768)
    assert model.max_tokens_per_input == 512 and model.space == "openai-compatible/BAAI/bge-base-en"
    assert profile.max_inputs_per_request == 64
    assert isinstance(build_provider("tei", settings), OpenAICompatibleProvider)


def test_unknown_names_are_clear_errors() -> None:
    with pytest.raises(ValidationError, match="unknown provider 'nope'"):
        provider_profile("nope", Settings())
    with pytest.raises(ValidationError, match="known: text-embedding-v3, text-embedding-v4"):
        get_profile("dashscope-intl").model("text-embedding-v2")
    with pytest.raises(ValidationError, match="unknown provider profile"):
        provider_profile("x", Settings(providers={"x": ProviderSettings(profile="dashscope")}))


def test_build_provider_picks_the_wire_and_reads_the_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-from-env")
    settings = Settings(
        providers={
            "ds": ProviderSettings(profile="dashscope-intl-native"),
            "dc": ProviderSettings(profile="dashscope-hk"),
        }
    )
    assert isinstance(build_provider("ds", settings), DashScopeNativeProvider)
    assert isinstance(build_provider("dc", settings), OpenAICompatibleProvider)
    assert isinstance(build_provider("local-hash", Settings()), LocalHashProvider)


def test_provider_settings_from_toml_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "syncsvc.toml"
    config.write_text('[providers.dashscope]\nprofile = "dashscope-intl"\nrpm = 1200\n')
    monkeypatch.setenv("SYNCSVC_CONFIG", str(config))
    monkeypatch.setenv("SYNCSVC_PROVIDERS__DASHSCOPE__TPM", "500000")
    profile = provider_profile("dashscope", Settings())
    assert profile.name == "dashscope-intl"
    assert (profile.rpm, profile.tpm) == (1200, 500_000)
