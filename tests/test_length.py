"""Length is never a permanent failure: when the API counts an input longer than the client's
tokenizer did (here the simulator counts with another Qwen vocabulary), the input is cut
shorter and retried, and the vector is recorded as truncated."""

from __future__ import annotations

from syncsvc.embed.embedder import Embedder
from syncsvc.embed.items import Embedded, EmbedFailure, EmbedInput, EmbedSpec
from syncsvc.embed.tokens import QwenTokens
from syncsvc.simulator import SimulatorThread
from syncsvc.simulator.vectors import embedding
from tests.simulator_fixtures import ProviderMaker

EMOJI = "😀🔭🚀" * 3000  # 9,000 client tokens; about 21,000 in the simulator's vocabulary
CJK = "望远镜如何工作" * 2000  # 10,000 client tokens; 6,000 in the other vocabulary
SHORT = "a short and ordinary input"


async def test_inputs_the_api_counts_longer_are_cut_shorter_not_failed(
    simulator: SimulatorThread, make_provider: ProviderMaker
) -> None:
    simulator.configure(vocabulary="qwen3.6-plus")
    embedder = Embedder(
        make_provider("dashscope-intl"),
        EmbedSpec(model="text-embedding-v4", dimensions=64),
        backoff_base=0.01,
    )
    outcomes = await embedder.embed(
        [EmbedInput("emoji", EMOJI), EmbedInput("cjk", CJK), EmbedInput("short", SHORT)]
    )
    emoji, cjk, short = outcomes["emoji"], outcomes["cjk"], outcomes["short"]
    assert isinstance(emoji, Embedded) and emoji.truncated
    assert isinstance(cjk, Embedded) and cjk.truncated  # the client's own cut to 8,192
    assert isinstance(short, Embedded) and not short.truncated
    # The vector is the simulator's vector of the text it accepted: a prefix of the input.
    tokens = QwenTokens()
    for share in (0.75, 0.5, 0.25):
        candidate = tokens.truncate(EMOJI, int(8192 * share))
        if emoji.vectors[0] == tuple(embedding(candidate, 64)):
            break
    else:
        raise AssertionError("the emoji vector is not of any shorter cut")
    assert short.vectors[0] == tuple(embedding(SHORT, 64))


async def test_a_length_rejection_at_a_quarter_fails_the_row(
    simulator: SimulatorThread, make_provider: ProviderMaker
) -> None:
    # 4x the emoji: even a quarter of the client's 8,192-token cut is too long for this API.
    simulator.configure(vocabulary="qwen3.6-plus")
    embedder = Embedder(
        make_provider("dashscope-intl", max_tokens_per_input=8192 * 4),
        EmbedSpec(model="text-embedding-v4", dimensions=64),
        backoff_base=0.01,
    )
    outcome = (await embedder.embed([EmbedInput("x", EMOJI * 4)]))["x"]
    assert isinstance(outcome, EmbedFailure) and outcome.permanent
    assert "Range of input length" in outcome.message
