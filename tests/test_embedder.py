"""The Embedder over real HTTP against the simulator: packing, faults, bisection, limits."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from syncsvc.core.models import TextType
from syncsvc.embed import lexical
from syncsvc.embed.embedder import Embedder
from syncsvc.embed.items import Embedded, EmbedFailure, EmbedInput, EmbedSpec, ProviderPaused
from syncsvc.embed.profiles import OverlongPolicy
from syncsvc.embed.tokens import QwenTokens
from syncsvc.providers.local import LocalHashProvider
from syncsvc.simulator import FaultKind, FaultRule, SimulatorThread
from syncsvc.simulator.vectors import embedding
from tests.simulator_fixtures import ProviderMaker

V4 = EmbedSpec(model="text-embedding-v4", dimensions=64)


def inputs(*texts: str) -> list[EmbedInput]:
    return [EmbedInput(key=i, text=t) for i, t in enumerate(texts)]


def vectors_of(outcome: object) -> tuple[tuple[float, ...], ...]:
    assert isinstance(outcome, Embedded), outcome
    return outcome.vectors


def lex(text: str, dims: int = 64) -> tuple[float, ...]:
    return tuple(lexical.embed(text, dims))


def sim(text: str, dims: int = 64) -> tuple[float, ...]:
    """The simulator's reply vector for ``text`` (its default, dense form)."""
    return tuple(embedding(text, dims))


def fast(provider: object, spec: EmbedSpec = V4, **options: object) -> Embedder:
    return Embedder(provider, spec, backoff_base=0.02, **options)  # type: ignore[arg-type]


async def test_packs_to_ten_per_request_and_sends_duplicates_once(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    texts = [f"document number {i}" for i in range(25)]
    items = inputs(*texts, *texts[:5])
    outcomes = await fast(make_provider()).embed(items)
    assert len(outcomes) == 30
    for item in items:
        assert vectors_of(outcomes[item.key]) == (sim(item.text),)
    stats = simulator.stats()
    assert stats["requests"] == 3
    assert stats["batch_sizes"] == {"10": 2, "5": 1}
    assert stats["inputs"] == 25


async def test_empty_input_makes_no_request(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    assert await fast(make_provider()).embed([]) == {}
    assert simulator.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("rule", "profile"),
    [
        (FaultRule(FaultKind.RATE_LIMIT, count=2, retry_after=0.05), "dashscope-intl"),
        (FaultRule(FaultKind.RATE_LIMIT, count=2, retry_after_ms=50), "dashscope-intl-native"),
        (FaultRule(FaultKind.RATE_LIMIT, count=1), "dashscope-intl"),
        (FaultRule(FaultKind.SERVER_ERROR, count=2), "dashscope-intl"),
        (FaultRule(FaultKind.SERVER_ERROR, count=2), "dashscope-cn-native"),
        (FaultRule(FaultKind.MALFORMED, count=1), "dashscope-intl"),
        (FaultRule(FaultKind.MALFORMED, count=1), "dashscope-intl-native"),
        (FaultRule(FaultKind.NAN, count=1), "dashscope-intl"),
        (FaultRule(FaultKind.BAD_VECTOR, count=1), "dashscope-intl-native"),
        (FaultRule(FaultKind.MISSING, count=1), "dashscope-intl"),
        (FaultRule(FaultKind.HANG, count=1, hang_seconds=1.5), "dashscope-intl"),
    ],
    ids=lambda v: v.kind.value + "-" + str(v.count) if isinstance(v, FaultRule) else v,
)
async def test_transient_faults_are_retried_whole_and_succeed(
    make_provider: ProviderMaker, simulator: SimulatorThread, rule: FaultRule, profile: str
) -> None:
    simulator.set_faults(rule)
    texts = [f"row {i} about apples" for i in range(10)]
    provider = make_provider(profile, timeout_seconds=0.4)
    outcomes = await fast(provider).embed(inputs(*texts))
    assert [vectors_of(outcomes[i]) for i in range(10)] == [(sim(t),) for t in texts]
    stats = simulator.stats()
    assert stats["faults"] == {rule.kind.value: rule.count}
    # Retried as the same batch of ten: never split apart.
    assert stats["requests"] == 1 + (rule.count or 0)
    assert stats["batch_sizes"] == {"10": 1}


async def test_exhausted_retries_fail_the_rows_as_retryable(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.set_faults(FaultRule(FaultKind.SERVER_ERROR))
    outcomes = await fast(make_provider(), request_retries=2).embed(inputs("a b", "c d"))
    for outcome in outcomes.values():
        assert isinstance(outcome, EmbedFailure)
        assert not outcome.permanent
        assert "internal error" in outcome.message and outcome.request_id
    assert simulator.stats()["requests"] == 3


@pytest.mark.parametrize(
    "rule", [FaultRule(FaultKind.UNAUTHORIZED), FaultRule(FaultKind.ARREARAGE)]
)
async def test_auth_errors_pause_without_retrying(
    make_provider: ProviderMaker, simulator: SimulatorThread, rule: FaultRule
) -> None:
    simulator.set_faults(rule)
    with pytest.raises(ProviderPaused) as caught:
        await fast(make_provider()).embed(inputs(*[f"text {i}" for i in range(30)]))
    assert caught.value.error.code in ("invalid_api_key", "Arrearage")
    # The first refusal stops the round: no retries, and the other batches are cancelled.
    assert simulator.stats()["requests"] <= 3
    assert simulator.stats()["ok"] == 0


async def test_bad_dimensions_pause_instead_of_failing_every_row(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    provider = make_provider(dimensions=[100])
    spec = EmbedSpec(model="text-embedding-v4", dimensions=100)
    with pytest.raises(ProviderPaused) as caught:
        await fast(provider, spec).embed(inputs("a", "b", "c"))
    assert "dimension" in str(caught.value)
    assert simulator.stats()["requests"] == 1


async def test_bisection_isolates_one_poison_input_among_ten(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.set_faults(poison=["POISON"])
    texts = [f"clean text {i}" for i in range(10)]
    texts[7] = "this one carries POISON"
    outcomes = await fast(make_provider()).embed(inputs(*texts))
    failure = outcomes[7]
    assert isinstance(failure, EmbedFailure) and failure.permanent
    assert "Input data may contain inappropriate content." in failure.message
    assert failure.request_id
    for i in (0, 1, 2, 3, 4, 5, 6, 8, 9):
        assert vectors_of(outcomes[i]) == (sim(texts[i]),)
    # [0-9] fails; [0-4] ok, [5-9] fails; [5,6] ok, [7-9] fails; [7] fails, [8,9] ok.
    assert simulator.stats()["requests"] == 7
    assert simulator.stats()["inputs"] == 9


async def test_overlong_input_is_truncated_to_the_documented_limit(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    text = "alpha beta gamma delta " * 2100  # 8,400 tokens
    assert QwenTokens().count(text) > 8192
    outcomes = await fast(make_provider()).embed(inputs(text, "short"))
    embedded = outcomes[0]
    assert isinstance(embedded, Embedded) and embedded.truncated
    cut = QwenTokens().truncate(text, 8192)
    assert embedded.vectors == (sim(cut),)
    assert 8180 <= embedded.tokens <= 8192
    short = outcomes[1]
    assert isinstance(short, Embedded) and not short.truncated
    assert simulator.stats()["requests"] == 1


async def test_chunk_policy_gives_one_vector_per_piece(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    text = " ".join(f"word{i}" for i in range(40))
    provider = make_provider(max_tokens_per_input=30, overlong="chunk")
    embedder = fast(provider)
    assert embedder.overlong is OverlongPolicy.CHUNK
    outcomes = await embedder.embed(inputs(text))
    pieces = QwenTokens().split(text, 30)
    assert len(pieces) >= 3
    embedded = outcomes[0]
    assert isinstance(embedded, Embedded) and not embedded.truncated
    assert embedded.vectors == tuple(sim(p) for p in pieces)
    assert embedded.tokens == sum(QwenTokens().count(p) for p in pieces)
    # Each chunk carries its own share of the request's usage (the API reports one total per
    # request), and the shares add up to what the API billed.
    assert len(embedded.chunk_tokens) == len(pieces)
    assert all(0 < n < embedded.tokens for n in embedded.chunk_tokens)
    assert sum(embedded.chunk_tokens) == embedded.tokens == simulator.stats()["tokens"]


async def test_requests_are_packed_to_one_second_of_the_tpm_budget(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.configure(tpm=60_000)  # 1,000 tokens per one-second window
    texts = [" ".join(f"w{i}x{j}" for j in range(80)) for i in range(6)]
    tokens = [QwenTokens().count(t) for t in texts]
    assert all(324 <= n <= 485 for n in tokens)  # two fit in 970 tokens, three do not
    embedder = fast(make_provider(tpm=60_000))
    assert embedder.max_request_tokens == 970
    outcomes = await embedder.embed(inputs(*texts))
    assert [vectors_of(outcomes[i]) for i in range(6)] == [(sim(t),) for t in texts]
    stats = simulator.stats()
    assert stats["rate_limited"] == 0
    assert stats["batch_sizes"] == {"2": 3}


async def test_rpm_cap_burst_stays_near_the_cap_with_few_429s(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.configure(rpm=3000)  # 50 requests per one-second window
    texts = [f"burst row {i}" for i in range(800)]
    embedder = fast(make_provider(rpm=3000, concurrency=16))
    outcomes = await embedder.embed(inputs(*texts))
    assert all(isinstance(o, Embedded) for o in outcomes.values())
    stats = simulator.stats()
    assert stats["ok"] == 80
    # Paced under the cap: at most a couple of 429s, none once the first window is over.
    # How close to the cap it runs is a speed: bench/backfill_bench.py measures it (--rpm).
    assert stats["rate_limited"] <= 2
    assert stats["rate_limited_late"] == 0


async def test_requests_in_flight_are_bounded_by_concurrency(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.configure(latency_ms=100)
    texts = [f"parallel {i}" for i in range(120)]
    outcomes = await fast(make_provider(concurrency=4)).embed(inputs(*texts))
    assert len(outcomes) == 120
    stats = simulator.stats()
    # 12 requests of 10, 4 at a time (never more, and the limit is used): counted by the API
    # itself. The time this takes is a speed, for bench/ (transport_bench.py).
    assert (stats["requests"], stats["ok"], stats["inputs"]) == (12, 12, 120)
    assert stats["max_in_flight"] == 4


async def test_qwen3_query_with_instruction(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    spec = EmbedSpec(model="Qwen/Qwen3-Embedding-4B", dimensions=2560, text_type=TextType.QUERY)
    outcomes = await fast(make_provider("qwen3-openai"), spec).embed(inputs("cheap flights"))
    assert vectors_of(outcomes[0]) == (sim("cheap flights", 2560),)


async def test_native_sparse_vectors_reach_the_outcome(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    spec = EmbedSpec(model="text-embedding-v4", dimensions=64, sparse=True)
    outcomes = await fast(make_provider("dashscope-intl-native"), spec).embed(
        inputs("red red apple")
    )
    embedded = outcomes[0]
    assert isinstance(embedded, Embedded) and embedded.sparse is not None
    assert sorted(embedded.sparse[0].values()) == pytest.approx([0.447214, 0.894427])


async def test_local_provider_still_works_with_lexical_tokens() -> None:
    provider = LocalHashProvider()
    spec = EmbedSpec(model="local-hash", dimensions=32)
    keys: list[Hashable] = ["a", "b"]
    items = [EmbedInput(key=k, text=f"text {k}") for k in keys]
    outcomes = await Embedder(provider, spec).embed(items)
    assert vectors_of(outcomes["a"]) == (lex("text a", 32),)
    assert provider.calls == 1


async def test_live_requests_take_the_next_slot_ahead_of_a_backfill(
    make_provider: ProviderMaker, simulator: SimulatorThread
) -> None:
    simulator.configure(latency_ms=20)
    embedder = fast(make_provider(concurrency=1))
    rows = inputs(*(f"backfill row {i}" for i in range(100)))
    backfill = asyncio.create_task(embedder.embed(rows, priority=2))
    await asyncio.sleep(0.005)  # one backfill request in flight, nine waiting for the slot
    live = await embedder.embed([EmbedInput("edit", "a live edit")], priority=0)
    served_by_then = simulator.stats()["requests"]
    outcomes = await backfill
    assert vectors_of(live["edit"]) == (sim("a live edit"),)
    # First come, first served, the edit would have waited for all ten backfill requests.
    assert served_by_then <= 3
    assert [vectors_of(outcomes[r.key]) for r in rows] == [(sim(r.text),) for r in rows]
    assert simulator.stats()["requests"] == 11


@pytest.mark.parametrize(
    ("vector", "message"),
    [
        ((0.5, "0.5", 0.1), "non-numeric"),
        ((0.5, None, 0.1), "non-numeric"),
        ((0.5, float("nan"), 0.1), "non-finite"),
        ((0.5, float("inf"), 0.1), "non-finite"),
        ((0.5, 0.1), "2 dimensions, expected 3"),
    ],
)
def test_a_reply_that_could_corrupt_the_vector_space_is_retried(
    vector: tuple[object, ...], message: str
) -> None:
    from syncsvc.embed.provider import EmbeddingResponse, ErrorKind, ProviderError
    from syncsvc.embed.replies import validate

    response = EmbeddingResponse(vectors=(vector,), total_tokens=3, request_id="r")  # type: ignore[arg-type]
    with pytest.raises(ProviderError, match=message) as raised:
        validate(response, 1, 3)
    assert raised.value.kind is ErrorKind.RETRYABLE
    validate(EmbeddingResponse(vectors=((0.5, 0.1, 0.2),), total_tokens=3), 1, 3)


@pytest.mark.parametrize("index", [-1, 1_000_000])
def test_a_sparse_index_outside_the_stored_dimension_is_a_bad_reply(index: int) -> None:
    """Refused as the reply (retried, then failed visibly), never met first by the write,
    where it would fail the whole round again and again."""
    from syncsvc.embed.provider import EmbeddingResponse, ErrorKind, ProviderError
    from syncsvc.embed.replies import validate

    bad = EmbeddingResponse(
        vectors=((0.5, 0.1, 0.2),), total_tokens=3, sparse=({index: 0.3, 7: 0.1},)
    )
    with pytest.raises(ProviderError, match="sparse vector has an index outside") as raised:
        validate(bad, 1, 3, sparse=True)
    assert raised.value.kind is ErrorKind.RETRYABLE
    good = EmbeddingResponse(vectors=((0.5, 0.1, 0.2),), total_tokens=3, sparse=({7: 0.1},))
    validate(good, 1, 3, sparse=True)


def test_a_batch_bill_is_shared_by_length_and_adds_up() -> None:
    embedder = fast(LocalHashProvider(), EmbedSpec(model="local-hash", dimensions=64))
    texts = ["a", "bb bb", "ccc ccc ccc ccc"]
    assert embedder._shares(texts, 21) == [1, 5, 15]
    assert sum(embedder._shares(texts, 7)) == 7
    assert embedder._shares(["one input"], 9) == [9]
    # No usage reported: the inputs are counted (local-hash tokens are words).
    assert embedder._shares(texts, 0) == [1, 2, 4]
