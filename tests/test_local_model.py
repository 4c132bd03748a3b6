"""The ``local`` provider: WordLlama's shipped weights, offline, behind the provider Protocol."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from syncsvc.core.models import TextType
from syncsvc.core.settings import Settings
from syncsvc.embed.profiles import WORDLLAMA_MODEL
from syncsvc.embed.provider import EmbeddingRequest, ErrorKind, ProviderError
from syncsvc.embed.tokens import TokenizerKind, counter
from syncsvc.providers.registry import build_provider, provider_profile
from syncsvc.providers.wordllama import WordLlamaProvider, tokenizer

TEXTS = ("how do telescopes work", "the optics of a refracting telescope", "a recipe for bread")


def request(dimensions: int, texts: tuple[str, ...] = TEXTS, **kw: object) -> EmbeddingRequest:
    return EmbeddingRequest(texts=texts, model=WORDLLAMA_MODEL, dimensions=dimensions, **kw)  # type: ignore[arg-type]


async def test_vectors_are_unit_matryoshka_prefixes_and_mean_something() -> None:
    provider = WordLlamaProvider()
    full = np.array((await provider.embed(request(256))).vectors)
    for dims in (128, 64):
        small = np.array((await provider.embed(request(dims))).vectors)
        prefix = full[:, :dims] / np.linalg.norm(full[:, :dims], axis=1, keepdims=True)
        np.testing.assert_allclose(small, prefix, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
    similarity = full @ full.T
    # Two texts about telescopes sharing one word are closer than either is to bread.
    assert similarity[0, 1] > 0.5 > 0.1 > similarity[0, 2]
    assert provider.calls == 3 and provider.inputs == 9


async def test_queries_and_documents_embed_identically_and_tokens_are_the_models() -> None:
    provider = WordLlamaProvider()
    document = await provider.embed(request(64))
    query = await provider.embed(request(64, text_type=TextType.QUERY))
    assert document.vectors == query.vectors
    expected_tokens = sum(len(tokenizer().encode(t, add_special_tokens=False).ids) for t in TEXTS)
    assert document.total_tokens == expected_tokens
    tokens = counter(TokenizerKind.WORDLLAMA)
    text = "one two three four five six seven"
    assert tokens.count(text) == len(tokenizer().encode(text, add_special_tokens=False).ids)
    pieces = tokens.split(text, 3)
    assert "".join(pieces) == text and all(tokens.count(p.strip()) <= 3 for p in pieces)
    assert tokens.truncate(text, 100) == text


@pytest.mark.parametrize(
    ("dimensions", "texts", "message"),
    [
        (100, TEXTS, "offers wordllama-l2-supercat with 256/128/64 dimensions"),
        (64, ("x",) * 65, "should not be larger than 64"),
    ],
)
async def test_bad_requests_are_bad_input(
    dimensions: int, texts: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ProviderError, match=message) as raised:
        await WordLlamaProvider().embed(request(dimensions, texts))
    assert raised.value.kind is ErrorKind.BAD_INPUT


def test_local_needs_no_configuration() -> None:
    settings = Settings()
    profile = provider_profile("local", settings)
    assert profile.models[WORDLLAMA_MODEL].dimensions == (256, 128, 64)
    assert isinstance(build_provider("local", settings), WordLlamaProvider)


def test_loading_and_embedding_never_touch_the_network() -> None:
    """In a fresh process where every socket connection fails, the model loads and embeds."""
    script = """
import asyncio, socket
def refuse(*args, **kwargs):
    raise OSError("network used")
socket.socket.connect = refuse
socket.create_connection = refuse
from syncsvc.providers.wordllama import WordLlamaProvider
from tests.test_local_model import request
response = asyncio.run(WordLlamaProvider().embed(request(256)))
print(len(response.vectors), len(response.vectors[0]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "256"]
