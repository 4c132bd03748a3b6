"""Both wire protocols over real HTTP against the simulator: payloads, parsing, error classes."""

from __future__ import annotations

import httpx
import pytest

from syncsvc.core.models import TextType
from syncsvc.embed.provider import EmbeddingRequest, ErrorKind, ProviderError
from syncsvc.embed.tokens import QwenTokens
from syncsvc.providers.http import retry_after
from syncsvc.simulator import FaultKind, FaultRule, SimulatorThread
from syncsvc.simulator.vectors import embedding
from tests.simulator_fixtures import SIM_KEY, ProviderMaker

V4 = "text-embedding-v4"


def request(*texts: str, dims: int = 64, **extra: object) -> EmbeddingRequest:
    return EmbeddingRequest(texts=texts, model=V4, dimensions=dims, **extra)  # type: ignore[arg-type]


def sim(text: str, dims: int = 64) -> tuple[float, ...]:
    """The simulator's reply vector for ``text`` (its default, dense form)."""
    return tuple(embedding(text, dims))


@pytest.mark.parametrize("profile", ["dashscope-intl", "dashscope-intl-native"])
async def test_success_returns_the_simulators_vectors_in_order(
    make_provider: ProviderMaker, simulator: SimulatorThread, profile: str
) -> None:
    provider = make_provider(profile)
    texts = ("red apples", "green pears grow", "blue sky")
    response = await provider.embed(request(*texts))
    assert response.vectors == tuple(sim(t) for t in texts)
    assert response.total_tokens == sum(QwenTokens().count(t) for t in texts)
    assert response.request_id and len(response.request_id) == 36
    route = "native" if profile.endswith("native") else "compatible"
    assert simulator.stats()["by_route"] == {route: 1}


async def test_native_sparse_output_is_parsed(make_provider: ProviderMaker) -> None:
    provider = make_provider("dashscope-cn-native")
    response = await provider.embed(request("apple apple pie", "pie", sparse=True))
    assert response.sparse is not None
    first, second = response.sparse
    assert sorted(first.values()) == pytest.approx([0.447214, 0.894427])
    assert list(second.values()) == [1.0]
    # The same word maps to the same sparse index.
    assert set(second) < set(first)


async def test_base64_embeddings_are_decoded(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.set_faults(FaultRule(FaultKind.BASE64))
    response = await make_provider("aimlapi").embed(
        EmbeddingRequest(
            texts=("hello there world",), model="alibaba/qwen-text-embedding-v4", dimensions=128
        )
    )
    expected = embedding("hello there world", 128)
    assert response.vectors[0] == pytest.approx(expected, abs=1e-6)
    assert simulator.stats()["by_route"] == {"openai": 1}


async def test_qwen3_query_is_instructed_and_dimensions_left_native(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    provider = make_provider("qwen3-openai")
    query = EmbeddingRequest(
        texts=("cheap flights",),
        model="Qwen/Qwen3-Embedding-0.6B",
        dimensions=1024,
        text_type=TextType.QUERY,
        instruct="Find travel offers",
    )
    response = await provider.embed(query)
    # The simulator embeds an instructed query by its query part, as a Qwen3 host would.
    assert response.vectors[0] == sim("cheap flights", 1024)
    # "Instruct: Find travel offers\nQuery:cheap flights" is what was counted.
    assert response.total_tokens > 2


@pytest.mark.parametrize(
    ("rule", "kind", "code", "retry_after"),
    [
        (
            FaultRule(FaultKind.RATE_LIMIT, retry_after=2),
            ErrorKind.RATE_LIMITED,
            "limit_requests",
            2.0,
        ),
        (
            FaultRule(FaultKind.RATE_LIMIT, retry_after_ms=250),
            ErrorKind.RATE_LIMITED,
            "limit_requests",
            0.25,
        ),
        (FaultRule(FaultKind.RATE_LIMIT), ErrorKind.RATE_LIMITED, "limit_requests", None),
        (FaultRule(FaultKind.SERVER_ERROR), ErrorKind.RETRYABLE, "internal_error", None),
        (FaultRule(FaultKind.MALFORMED), ErrorKind.RETRYABLE, "BadResponse", None),
        (FaultRule(FaultKind.MISSING), ErrorKind.RETRYABLE, "BadResponse", None),
        (FaultRule(FaultKind.ARREARAGE), ErrorKind.AUTH, "Arrearage", None),
        (FaultRule(FaultKind.UNAUTHORIZED), ErrorKind.AUTH, "invalid_api_key", None),
    ],
)
async def test_compatible_faults_are_classified(
    make_provider: ProviderMaker,
    simulator: SimulatorThread,
    rule: FaultRule,
    kind: ErrorKind,
    code: str,
    retry_after: float | None,
) -> None:
    simulator.set_faults(rule)
    with pytest.raises(ProviderError) as caught:
        await make_provider().embed(request("some text"))
    error = caught.value
    assert (error.kind, error.code, error.retry_after) == (kind, code, retry_after)
    assert error.request_id


@pytest.mark.parametrize(
    ("rule", "kind", "code", "status"),
    [
        (FaultRule(FaultKind.RATE_LIMIT), ErrorKind.RATE_LIMITED, "Throttling.RateQuota", 429),
        (FaultRule(FaultKind.SERVER_ERROR), ErrorKind.RETRYABLE, "InternalError", 500),
        (FaultRule(FaultKind.ARREARAGE), ErrorKind.AUTH, "Arrearage", 400),
        (FaultRule(FaultKind.MALFORMED), ErrorKind.RETRYABLE, "BadResponse", 200),
    ],
)
async def test_native_faults_are_classified(
    make_provider: ProviderMaker,
    simulator: SimulatorThread,
    rule: FaultRule,
    kind: ErrorKind,
    code: str,
    status: int,
) -> None:
    simulator.set_faults(rule)
    with pytest.raises(ProviderError) as caught:
        await make_provider("dashscope-hk-native").embed(request("some text"))
    assert (caught.value.kind, caught.value.code, caught.value.status) == (kind, code, status)


async def test_poison_is_bad_input_with_the_api_message(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.set_faults(poison=["FORBIDDEN"])
    with pytest.raises(ProviderError) as caught:
        await make_provider().embed(request("fine", "this is FORBIDDEN text"))
    assert caught.value.kind is ErrorKind.BAD_INPUT
    assert caught.value.code == "data_inspection_failed"
    assert "inappropriate content" in str(caught.value)


async def test_documented_limits_are_bad_input_or_configuration(
    make_provider: ProviderMaker,
) -> None:
    provider = make_provider("dashscope-intl", max_inputs_per_request=20)
    with pytest.raises(ProviderError) as batch:
        await provider.embed(request(*[f"text {i}" for i in range(11)]))
    assert batch.value.kind is ErrorKind.BAD_INPUT
    assert "should not be larger than 10" in batch.value.message
    with pytest.raises(ProviderError) as long_input:
        await provider.embed(request("word " * 8200))
    assert long_input.value.kind is ErrorKind.BAD_INPUT
    assert "[1, 8192]" in long_input.value.message
    # Wrong dimensions fail every request: a configuration error pauses, it is not bisected.
    with pytest.raises(ProviderError) as dims:
        await provider.embed(request("fine", dims=100))
    assert dims.value.kind is ErrorKind.AUTH


async def test_timeout_is_retryable(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.set_faults(FaultRule(FaultKind.HANG, count=1, hang_seconds=2))
    with pytest.raises(ProviderError) as caught:
        await make_provider(timeout_seconds=0.3).embed(request("slow"))
    assert (caught.value.kind, caught.value.code) == (ErrorKind.RETRYABLE, "Timeout")


async def test_connection_refused_is_retryable(make_provider: ProviderMaker) -> None:
    provider = make_provider(base_url="http://127.0.0.1:9/compatible-mode/v1")
    with pytest.raises(ProviderError) as caught:
        await provider.embed(request("x"))
    assert (caught.value.kind, caught.value.code) == (ErrorKind.RETRYABLE, "ConnectionError")


async def test_the_key_never_appears_in_errors_or_reprs(
    make_provider: ProviderMaker, simulator: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WRONG_KEY_ENV", "sk-wrong-secret-value")
    provider = make_provider(api_key_env="WRONG_KEY_ENV")
    with pytest.raises(ProviderError) as caught:
        await provider.embed(request("x"))
    assert caught.value.kind is ErrorKind.AUTH and caught.value.status == 401
    for text in (str(caught.value), repr(caught.value), repr(provider), repr(vars(provider))):
        assert "sk-wrong-secret-value" not in text
        assert SIM_KEY not in text


async def test_missing_key_variable_is_an_auth_error_without_a_request(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    provider = make_provider(api_key_env="SYNCSVC_NO_SUCH_VARIABLE")
    with pytest.raises(ProviderError) as caught:
        await provider.embed(request("x"))
    assert caught.value.kind is ErrorKind.AUTH
    assert "SYNCSVC_NO_SUCH_VARIABLE is not set" in str(caught.value)
    assert simulator.stats()["requests"] == 0


async def test_wrong_base_url_is_a_configuration_error_naming_it(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    provider = make_provider(base_url=f"{simulator.url}/compatible/v1")
    with pytest.raises(ProviderError) as caught:
        await provider.embed(request("x"))
    assert (caught.value.kind, caught.value.status) == (ErrorKind.AUTH, 404)
    assert f"{simulator.url}/compatible/v1/" in str(caught.value)


def test_retry_after_header_forms() -> None:
    assert retry_after(httpx.Headers({"retry-after-ms": "1500", "Retry-After": "9"})) == 1.5
    assert retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert retry_after(httpx.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert retry_after(httpx.Headers({"Retry-After": "3600"})) == 60.0
    assert retry_after(httpx.Headers()) is None
