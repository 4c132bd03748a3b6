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


ROOT_LOGGER_PROBE = """
import asyncio, logging, sys
root = logging.getLogger()
mine = logging.StreamHandler(sys.stdout)
{setup}
before = (list(root.handlers), root.level)
from syncsvc.core.settings import Settings
from syncsvc.providers.registry import build_provider
from tests.test_local_model import request
provider = build_provider("local", Settings())
response = asyncio.run(provider.embed(request(64)))
assert (list(root.handlers), root.level) == before, (root.handlers, root.level, before)
logging.getLogger("wordllama").info("wordllama chatter")
logging.getLogger("wordllama.inference").info("wordllama chatter")
logging.getLogger("host").warning("host warning")
print(len(response.vectors), "vectors", file=sys.stderr)
"""


@pytest.mark.parametrize(
    "setup",
    [
        "",  # a host that configured nothing: root stays without handlers, at WARNING
        "root.addHandler(mine); root.setLevel(logging.INFO)",  # a host logging at INFO
    ],
    ids=["unconfigured-host", "host-at-info"],
)
def test_local_provider_leaves_the_root_logger_alone(setup: str) -> None:
    """wordllama calls ``logging.basicConfig(INFO)`` on import; the host's root logger (handlers
    and level) must be exactly as the host left it, and wordllama's INFO lines stay quiet."""
    done = subprocess.run(
        [sys.executable, "-c", ROOT_LOGGER_PROBE.format(setup=setup)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "3 vectors" in done.stderr
    output = done.stdout + done.stderr
    assert "wordllama chatter" not in output
    if setup:
        assert "host warning" in done.stdout  # the host's own handler still works
    else:
        assert "host warning" in done.stderr  # logging's last resort, not a basicConfig handler
        assert "WARNING:host" not in done.stderr
