"""Splitting a row's text into chunks of a target's size, on the most natural boundary.

Paragraphs (blank lines) are kept whole when they fit; a longer paragraph is split into
sentences, and a longer sentence at token boundaries of the model's tokenizer. In markdown
mode a heading also starts a new chunk, so no chunk spans two sections. Consecutive units are
packed into chunks of at most ``tokens`` tokens; with ``overlap``, a chunk starts with the last
whole units of the previous one, up to that many tokens. Every chunk is an exact slice of the
text, with its character offsets, so an edit that changes one paragraph changes only the chunks
that hold it (and the worker re-embeds only those).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from syncsvc.core.errors import ValidationError
from syncsvc.embed.tokens import TokenCounter

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE_END = re.compile(r"(?<=[.!?;:。！？；])\s+")
_HEADING = re.compile(r"^#{1,6}\s", re.MULTILINE)
MIN_TOKENS = 8


@dataclass(frozen=True)
class Chunking:
    """A generation's chunking (its ``chunking`` option)."""

    tokens: int
    overlap: int = 0
    markdown: bool = False

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Chunking | None:
        found = options.get("chunking")
        if not found:
            return None
        return cls(
            tokens=int(found["tokens"]),
            overlap=int(found.get("overlap", 0)),
            markdown=found.get("mode") == "markdown",
        )

    def as_option(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens,
            "overlap": self.overlap,
            "mode": "markdown" if self.markdown else "text",
        }

    def validate(self, max_tokens_per_input: int) -> None:
        if not MIN_TOKENS <= self.tokens <= max_tokens_per_input:
            raise ValidationError(
                f"chunk size must be between {MIN_TOKENS} and the model's "
                f"{max_tokens_per_input} tokens, not {self.tokens}"
            )
        if not 0 <= self.overlap < self.tokens:
            raise ValidationError(
                f"chunk overlap must be at least 0 and less than the chunk size ({self.tokens})"
            )


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    """Offset of the chunk's first character in the row's rendered text."""
    end: int


def _pieces(text: str, start: int, end: int, pattern: re.Pattern[str]) -> list[tuple[int, int]]:
    """``text[start:end]`` cut after each match of ``pattern`` (separators stay in front)."""
    spans, begin = [], start
    for match in pattern.finditer(text, start, end):
        if match.start() > begin:
            spans.append((begin, match.start()))
        begin = match.end()
    if begin < end:
        spans.append((begin, end))
    return spans


def _sections(text: str, markdown: bool) -> list[tuple[int, int]]:
    if not markdown:
        return [(0, len(text))]
    starts = sorted({0, *(m.start() for m in _HEADING.finditer(text))})
    return [(a, b) for a, b in zip(starts, [*starts[1:], len(text)], strict=True) if a < b]


def _units(
    text: str, span: tuple[int, int], limit: int, tokens: TokenCounter
) -> list[tuple[int, int]]:
    """Paragraphs, else sentences, else token-sized pieces, each within ``limit`` tokens."""
    out: list[tuple[int, int]] = []
    for paragraph in _pieces(text, *span, _PARAGRAPH_BREAK):
        if tokens.count(text[slice(*paragraph)]) <= limit:
            out.append(paragraph)
            continue
        for sentence in _pieces(text, *paragraph, _SENTENCE_END):
            piece = text[slice(*sentence)]
            if tokens.count(piece) <= limit:
                out.append(sentence)
                continue
            at = sentence[0]
            for part in tokens.split(piece, limit):
                begin = text.find(part, at, sentence[1])
                begin = at if begin < 0 else begin
                out.append((begin, begin + len(part)))
                at = begin + len(part)
    return out


def split(text: str, chunking: Chunking, tokens: TokenCounter) -> list[Chunk]:
    """The chunks of ``text``; a text within the size is one chunk (empty text: none)."""
    if not text.strip():
        return []
    if tokens.count(text) <= chunking.tokens and not chunking.markdown:
        return [Chunk(text, 0, len(text))]
    chunks: list[Chunk] = []
    for section in _sections(text, chunking.markdown):
        units = _units(text, section, chunking.tokens, tokens)
        first = 0
        while first < len(units):
            last = first
            while last + 1 < len(units) and (
                tokens.count(text[units[first][0] : units[last + 1][1]]) <= chunking.tokens
            ):
                last += 1
            chunks.append(
                Chunk(text[units[first][0] : units[last][1]], units[first][0], units[last][1])
            )
            if last + 1 >= len(units):
                break
            # The next chunk repeats the last whole units of this one, up to ``overlap``.
            following = last + 1
            while (
                following - 1 > first
                and chunking.overlap
                and tokens.count(text[units[following - 1][0] : units[last][1]]) <= chunking.overlap
            ):
                following -= 1
            first = following
    return chunks


def digest(text: str) -> bytes:
    """The identity of a chunk's text: equal digests, equal vectors (within a generation)."""
    return hashlib.sha256(text.encode()).digest()
