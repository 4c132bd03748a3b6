"""A deterministic lexical embedder: hashed words and word pairs, L2-normalised.

It needs no network and no model weights, so the whole pipeline (and the API simulator) can run
offline while similarity search still ranks texts that share vocabulary close together.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
import re
from collections.abc import Iterable

WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "from",
        "has",
        "have",
        "he",
        "her",
        "his",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "we",
        "were",
        "what",
        "when",
        "which",
        "who",
        "will",
        "with",
        "you",
        "your",
        "not",
        "no",
        "can",
        "do",
        "does",
        "did",
        "been",
        "being",
    ]
)
PAIR_WEIGHT = 0.5


@functools.lru_cache(maxsize=1 << 16)
def _hash(token: str) -> int:
    # Words and word pairs recur across texts: the simulator hashes each once, not per request.
    return int.from_bytes(hashlib.blake2b(token.encode(), digest_size=8).digest(), "little")


def bucket(token: str, dimensions: int) -> tuple[int, float]:
    value = _hash(token)
    return value % dimensions, (1.0 if (value >> 63) & 1 else -1.0)


def words(text: str) -> list[str]:
    """Lower-cased content words (stop words removed)."""
    return [w for w in WORD.findall(text.lower()) if w not in _STOPWORDS]


def features(text: str) -> Iterable[tuple[str, float]]:
    tokens = words(text)
    for w in tokens:
        yield w, 1.0
    for a, b in itertools.pairwise(tokens):
        yield f"{a} {b}", PAIR_WEIGHT


def embed(text: str, dimensions: int) -> list[float]:
    """Embed ``text`` into ``dimensions`` floats with unit L2 norm (all zeros but one for empty)."""
    vector = [0.0] * dimensions
    for feature, weight in features(text):
        index, sign = bucket(feature, dimensions)
        vector[index] += sign * weight
    norm = math.sqrt(sum(v * v for v in vector))
    if norm == 0.0:
        # An input with no words still needs a valid, finite unit vector.
        vector[0] = 1.0
        return vector
    return [v / norm for v in vector]


def count_tokens(text: str) -> int:
    """A cheap token estimate used when no real tokenizer applies."""
    return max(1, len(WORD.findall(text)))
