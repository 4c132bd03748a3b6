"""From many texts to vectors: token-aware packing, dedupe, concurrency, retry, bisection.

The worker hands an ``Embedder`` the texts of one round; it returns one outcome per input and
never raises for a single bad input. Only an authentication-class error, which no retry can fix,
escapes as ``ProviderPaused`` so the caller can pause the target instead of burning attempts.

Requests are packed to the provider profile's limits in the provider's own tokens (inputs per
request, tokens per request, and what one second of a TPM budget allows). Inputs over the
per-input limit are truncated (default, recorded) or chunked (one vector per piece). A failed
request is retried whole with exponential backoff and jitter (honouring ``Retry-After``); only a
400 on the inputs splits a batch, in halves, until the offending inputs stand alone.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass

from syncsvc.core.errors import ValidationError
from syncsvc.core.models import TextType
from syncsvc.embed import chunking
from syncsvc.embed.items import (
    Embedded,
    EmbedFailure,
    EmbedInput,
    EmbedSpec,
    Known,
    OnReady,
    Outcome,
    ProviderPaused,
    gather,
)
from syncsvc.embed.profiles import ModelProfile, OverlongPolicy
from syncsvc.embed.provider import (
    EmbeddingProvider,
    EmbeddingRequest,
    EmbeddingResponse,
    ErrorKind,
    ProviderError,
    Withdrawn,
)
from syncsvc.embed.ratelimit import SAFETY
from syncsvc.embed.replies import apportion, is_length_error, validate
from syncsvc.embed.tokens import TokenCounter, counter

logger = logging.getLogger(__name__)


_Turn = tuple[int, int | None]
"""(priority, tenant) of a request's wait for a provider slot."""


@dataclass(frozen=True)
class _Piece:
    """One vector's worth of provider answer."""

    vector: tuple[float, ...]
    tokens: int
    request_id: str | None
    sparse: dict[int, float] | None
    truncated: bool = False
    """Cut shorter than planned because the API counted more tokens than the client."""
    reused: bool = False
    """Taken from the stored vectors: not sent, not paid for."""


@dataclass(frozen=True)
class _Plan:
    pieces: tuple[str, ...]
    truncated: bool
    spans: tuple[tuple[int, int], ...] = ()


class Embedder:
    """Embeds batches of texts through one provider with one generation's parameters."""

    def __init__(
        self,
        provider: EmbeddingProvider,
        spec: EmbedSpec,
        *,
        request_retries: int = 4,
        rate_limit_retries: int = 8,
        backoff_base: float = 0.2,
        backoff_max: float = 10.0,
        overlong: OverlongPolicy | None = None,
        tokens: TokenCounter | None = None,
        proceed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.provider = provider
        self.spec = spec
        self._proceed = proceed
        """The last check before each request goes out (see ``EmbeddingRequest.proceed``)."""
        profile = provider.profile
        self._request_retries = request_retries
        self._rate_limit_retries = rate_limit_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self.overlong = overlong or profile.overlong
        self.tokens = tokens or counter(profile.tokenizer)
        self.max_inputs = profile.max_inputs_per_request
        limits = [profile.max_tokens_per_request]
        if profile.tpm:
            # A request larger than one second of the TPM budget is rejected outright.
            limits.append(max(1, int(profile.tpm / 60 * SAFETY)))
        self.max_request_tokens = min((x for x in limits if x), default=None)

    def _model(self) -> ModelProfile:
        try:
            return self.provider.profile.model(self.spec.model)
        except ValidationError as error:
            raise ProviderPaused(
                ProviderError(ErrorKind.AUTH, str(error), code="UnknownModel")
            ) from None

    def _input_limit(self, model: ModelProfile) -> int:
        """Tokens left for the text itself once a client-side query instruction is added."""
        limit = model.max_tokens_per_input
        fmt = model.query_instruction_format
        if self.spec.text_type is TextType.QUERY and fmt is not None:
            instruct = self.spec.instruct or model.default_instruct or ""
            limit -= self.tokens.count(fmt.format(instruct=instruct, query=""))
        return max(1, limit)

    def _weight(self, text: str) -> int:
        """Exact tokens when a per-request token limit needs them, else a cheap proportional
        stand-in (characters) for packing requests."""
        if self.max_request_tokens is not None:
            return self.tokens.count(text)
        return max(1, len(text))

    def plan(self, text: str, limit: int) -> _Plan:
        """How one input is sent: as is, truncated, or as chunks."""
        # A token covers at least one UTF-8 byte and a character at most four: short texts
        # cannot be over the limit, and need no tokenizer pass.
        if self.spec.chunking is not None:
            chunks = chunking.split(text, self.spec.chunking, self.tokens)
            if chunks:
                return _Plan(
                    tuple(self.tokens.truncate(c.text, limit) for c in chunks),
                    truncated=False,
                    spans=tuple((c.start, c.end) for c in chunks),
                )
        if len(text) * 4 <= limit or self.tokens.count(text) <= limit:
            return _Plan((text,), truncated=False)
        if self.overlong is OverlongPolicy.CHUNK:
            return _Plan(tuple(self.tokens.split(text, limit)), truncated=False)
        return _Plan((self.tokens.truncate(text, limit),), truncated=True)

    def pack(self, pieces: Sequence[str]) -> list[list[str]]:
        """Greedy, order-preserving packing to the inputs- and tokens-per-request limits."""
        batches: list[list[str]] = []
        current: list[str] = []
        used = 0
        for piece in pieces:
            size = self._weight(piece)
            over_tokens = self.max_request_tokens is not None and (
                used + size > self.max_request_tokens
            )
            if current and (len(current) >= self.max_inputs or over_tokens):
                batches.append(current)
                current, used = [], 0
            current.append(piece)
            used += size
        if current:
            batches.append(current)
        return batches

    async def embed(
        self,
        inputs: Sequence[EmbedInput],
        *,
        priority: int = 0,
        tenant: int | None = None,
        on_ready: OnReady | None = None,
        known: Known | None = None,
    ) -> dict[Hashable, Outcome]:
        """Embed every input; identical texts (and identical chunks) are sent once.

        ``priority`` is the queue priority of the rows (0: live edits): the provider serves
        lower numbers first when its request slots are all busy, and shares them between
        ``tenant``s (targets) within a priority. ``on_ready`` is awaited
        with the outcomes of the inputs each request completes, as it completes: a caller
        that stores them then loses at most the requests in flight when it crashes.
        ``known`` chunks (by digest) are not sent: an edit re-embeds only changed chunks.
        Inputs whose request was ``Withdrawn`` before it was sent have no outcome.
        """
        by_text: dict[str, list[Hashable]] = {}
        for item in inputs:
            by_text.setdefault(item.text, []).append(item.key)
        if not by_text:
            return {}
        limit = self._input_limit(self._model())
        plans = {text: self.plan(text, limit) for text in by_text}
        unique = list(dict.fromkeys(p for plan in plans.values() for p in plan.pieces))
        results: dict[str, _Piece | EmbedFailure] = {}
        if known:
            for piece in unique:
                found = known.get(chunking.digest(piece))
                if found is not None:
                    results[piece] = _Piece(found[0], found[1], None, None, reused=True)
            unique = [p for p in unique if p not in results]
        waiting = {text: set(plan.pieces) - results.keys() for text, plan in plans.items()}
        texts_of: dict[str, list[str]] = {}
        for text, plan in plans.items():
            for piece in dict.fromkeys(plan.pieces):
                texts_of.setdefault(piece, []).append(text)
        outcomes: dict[Hashable, Outcome] = {}

        async def request(batch: list[str]) -> None:
            try:
                part = await self._embed_batch(batch, (priority, tenant))
            except Withdrawn as withdrawn:
                # Not sent (its generation was cancelled): these inputs get no outcome, and
                # the other requests go on undisturbed (their answers are the caller's).
                logger.info("request of %d inputs withdrawn: %s", len(batch), withdrawn)
                return
            results.update(part)
            ready: dict[Hashable, Outcome] = {}
            for piece in part:
                for text in texts_of.get(piece, ()):
                    left = waiting[text]
                    left.discard(piece)
                    if not left:
                        outcome = self._assemble(plans[text], results)
                        ready.update(dict.fromkeys(by_text[text], outcome))
            outcomes.update(ready)
            if ready and on_ready is not None:
                await on_ready(ready)

        done_already: dict[Hashable, Outcome] = {}
        for text, left in waiting.items():
            if not left:  # every chunk was known: nothing to send
                done_already.update(
                    dict.fromkeys(by_text[text], self._assemble(plans[text], results))
                )
        outcomes.update(done_already)
        if done_already and on_ready is not None:
            await on_ready(done_already)
        await gather([request(b) for b in self.pack(unique)])
        return outcomes

    @staticmethod
    def _assemble(plan: _Plan, results: dict[str, _Piece | EmbedFailure]) -> Outcome:
        parts = [results[p] for p in plan.pieces]
        failures = [p for p in parts if isinstance(p, EmbedFailure)]
        if failures:
            # A permanent failure of any piece dooms the row; otherwise it is worth a retry.
            return next((f for f in failures if f.permanent), failures[0])
        pieces = [p for p in parts if isinstance(p, _Piece)]
        sparse = tuple(p.sparse for p in pieces if p.sparse is not None)
        return Embedded(
            vectors=tuple(p.vector for p in pieces),
            tokens=sum(p.tokens for p in pieces),
            truncated=plan.truncated or any(p.truncated for p in pieces),
            request_id=next((p.request_id for p in pieces if p.request_id), None),
            sparse=sparse if len(sparse) == len(pieces) else None,
            chunk_tokens=tuple(p.tokens for p in pieces),
            spans=plan.spans,
            chunk_hashes=tuple(chunking.digest(t) for t in plan.pieces) if plan.spans else (),
            billed=sum(p.tokens for p in pieces if not p.reused),
        )

    async def _embed_batch(self, texts: list[str], turn: _Turn) -> dict[str, _Piece | EmbedFailure]:
        try:
            response = await self._request(texts, turn)
        except ProviderError as error:
            if error.kind is ErrorKind.BAD_INPUT:
                if len(texts) == 1 and is_length_error(error):
                    return {texts[0]: await self._embed_shorter(texts[0], error, turn)}
                if len(texts) == 1:
                    failure = EmbedFailure(str(error), permanent=True, request_id=error.request_id)
                    logger.warning("input rejected by the provider: %s", error)
                    return {texts[0]: failure}
                # Split to isolate the offending input(s); the rest still succeed.
                half = len(texts) // 2
                left, right = await gather(
                    [
                        self._embed_batch(texts[:half], turn),
                        self._embed_batch(texts[half:], turn),
                    ]
                )
                return {**left, **right}
            failure = EmbedFailure(str(error), permanent=False, request_id=error.request_id)
            return dict.fromkeys(texts, failure)
        sparse = response.sparse or (None,) * len(texts)
        shares = self._shares(texts, response.total_tokens)
        return {
            text: _Piece(vector, share, response.request_id, s)
            for text, vector, share, s in zip(texts, response.vectors, shares, sparse, strict=True)
        }

    def _shares(self, texts: list[str], billed: int) -> list[int]:
        """Each input's share of a request's bill (APIs report one total per request).

        Counting every input again costs more CPU than the rest of the request's handling
        (~35 µs per short input with the Qwen BPE), so a batch's bill is shared by UTF-8
        length; the shares still add up to what was billed. Our own counts stand in when the
        API reports no usage, and a batch holding chunks or pieces of a long input (counted
        when they were cut: cached) keeps exact shares.
        """
        if len(texts) == 1 and billed:
            return [billed]
        limit = self._input_limit(self._model())
        counted = self.spec.chunking is not None or any(len(t) * 4 > limit for t in texts)
        if not billed or counted:
            exact = [self.tokens.count(t) for t in texts]
            return exact if not billed or sum(exact) == billed else apportion(billed, exact)
        return apportion(billed, [len(t.encode()) for t in texts])

    async def _embed_shorter(
        self, text: str, error: ProviderError, turn: _Turn
    ) -> _Piece | EmbedFailure:
        """The API counted more tokens than our tokenizer: cut the input shorter and retry,
        at most three times (to 3/4, 1/2, then 1/4 of our count: vocabularies can differ by 2x
        on emoji). Length never fails a row otherwise."""
        counted = self.tokens.count(text)
        for share in SHORTER_SHARES:
            shorter = self.tokens.truncate(text, max(1, int(counted * share)))
            logger.warning(
                "input of %d tokens rejected for length (%s); retrying at %d%%",
                counted,
                error,
                int(share * 100),
            )
            try:
                response = await self._request([shorter], turn)
            except ProviderError as again:
                if again.kind is not ErrorKind.BAD_INPUT or not is_length_error(again):
                    permanent = again.kind is ErrorKind.BAD_INPUT
                    return EmbedFailure(
                        str(again), permanent=permanent, request_id=again.request_id
                    )
                error = again
                continue
            tokens = response.total_tokens or self.tokens.count(shorter)
            sparse = response.sparse[0] if response.sparse else None
            return _Piece(response.vectors[0], tokens, response.request_id, sparse, truncated=True)
        return EmbedFailure(str(error), permanent=True, request_id=error.request_id)

    def _delay(self, attempt: int, error: ProviderError) -> float:
        if error.retry_after is not None:
            return error.retry_after * (1.0 + 0.1 * random.random())
        ceiling = min(self._backoff_max, self._backoff_base * 2.0**attempt)
        # "Equal jitter": never less than half the step, so retries do spread out.
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    async def _request(self, texts: list[str], turn: _Turn) -> EmbeddingResponse:
        request = EmbeddingRequest(
            texts=tuple(texts),
            model=self.spec.model,
            dimensions=self.spec.dimensions,
            text_type=self.spec.text_type,
            instruct=self.spec.instruct,
            sparse=self.spec.sparse,
            priority=turn[0],
            tenant=turn[1],
            proceed=self._proceed,
        )
        attempt = 0
        while True:
            try:
                # Requests in flight are bounded by the provider's own slots.
                response = await self.provider.embed(request)
                validate(response, len(texts), self.spec.dimensions, self.spec.sparse)
                return response
            except ProviderError as error:
                if error.kind is ErrorKind.AUTH:
                    raise ProviderPaused(error) from error
                limit = (
                    self._rate_limit_retries
                    if error.kind is ErrorKind.RATE_LIMITED
                    else self._request_retries
                )
                if error.kind is ErrorKind.BAD_INPUT or attempt >= limit:
                    raise
                delay = self._delay(attempt, error)
                attempt += 1
                logger.warning(
                    "embedding request of %d inputs failed (%s); retry %d in %.2fs",
                    len(texts),
                    error,
                    attempt,
                    delay,
                )
                await asyncio.sleep(delay)


SHORTER_SHARES = (0.75, 0.5, 0.25)
