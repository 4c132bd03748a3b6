"""What goes into an embedder and what comes out: inputs, the generation's spec, outcomes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from syncsvc.core.models import TextType
from syncsvc.embed.chunking import Chunking
from syncsvc.embed.provider import ProviderError


@dataclass(frozen=True)
class EmbedInput:
    key: Hashable
    text: str


@dataclass(frozen=True)
class Embedded:
    vectors: tuple[tuple[float, ...], ...]
    """One vector per chunk; a single chunk unless the overlong policy is 'chunk'."""
    tokens: int
    truncated: bool = False
    request_id: str | None = None
    sparse: tuple[dict[int, float], ...] | None = None
    """One sparse vector per chunk when the spec asked for them (native DashScope only)."""
    chunk_tokens: tuple[int, ...] = ()
    """The tokens of each chunk (they add up to ``tokens``)."""
    spans: tuple[tuple[int, int], ...] = ()
    """Character offsets of each chunk in the input, for chunked generations."""
    chunk_hashes: tuple[bytes, ...] = ()
    """Digest of each chunk's text, for chunked generations."""
    billed: int | None = None
    """Tokens paid for now: less than ``tokens`` when unchanged chunks kept their vectors."""

    @property
    def billed_tokens(self) -> int:
        return self.tokens if self.billed is None else self.billed


@dataclass(frozen=True)
class EmbedFailure:
    message: str
    permanent: bool
    """True when retrying the same text cannot help (the API rejected this input)."""
    request_id: str | None = None


Outcome = Embedded | EmbedFailure
OnReady = Callable[[dict[Hashable, Outcome]], Awaitable[None]]
"""Awaited with the outcomes of the inputs one request completed."""


class ProviderPaused(Exception):
    """The provider refuses every request (bad key, no access, arrears): a human must act."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class EmbedSpec:
    """What a generation asks of its provider."""

    model: str
    dimensions: int
    text_type: TextType = TextType.DOCUMENT
    instruct: str | None = None
    sparse: bool = False
    chunking: Chunking | None = None
    """Split every input into chunks of this size (one vector each)."""


Known = Mapping[bytes, tuple[tuple[float, ...], int]]
"""Vectors already stored, by chunk digest: (vector, tokens). Chunks found here cost nothing."""


T = TypeVar("T")


async def gather(coroutines: list[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; on a failure, cancel the rest and raise it (a pause before others)."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
    except BaseExceptionGroup as errors:
        raise first_error(errors) from None
    return [t.result() for t in tasks]


def first_error(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stops the lot: a ``ProviderPaused`` before any other."""
    flat: list[BaseException] = []
    pending: list[BaseException] = [errors]
    while pending:
        error = pending.pop(0)
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        else:
            flat.append(error)
    return next((e for e in flat if isinstance(e, ProviderPaused)), flat[0])
