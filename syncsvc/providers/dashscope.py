"""The DashScope native wire: text_type, instruct and sparse output, which compatible mode lacks.

``POST {base_url}/services/embeddings/text-embedding/text-embedding`` with
``{"model", "input": {"texts": [...]}, "parameters": {"dimension", "text_type", "instruct"?,
"output_type"}}``; the reply is ``{"output": {"embeddings": [{"text_index", "embedding",
"sparse_embedding"?}]}, "usage": {"total_tokens"}, "request_id"}`` and an error is
``{"code", "message", "request_id"}``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from syncsvc.models import TextType
from syncsvc.providers.base import EmbeddingRequest, EmbeddingResponse, ErrorKind, ProviderError
from syncsvc.providers.http import HttpClient, Reply, classify, malformed, request_id
from syncsvc.providers.openai import decode_vector
from syncsvc.providers.profiles import ProviderProfile
from syncsvc.ratelimit import RateLimiter
from syncsvc.tokens import counter

logger = logging.getLogger(__name__)

NATIVE_PATH = "services/embeddings/text-embedding/text-embedding"


def parse_sparse(raw: object) -> dict[int, float] | None:
    """``[{"index", "value", "token"?}, ...]`` (documented) or ``{"indices", "values"}``."""
    if isinstance(raw, list):
        sparse: dict[int, float] = {}
        for item in raw:
            if not isinstance(item, dict):
                return None
            index, value = item.get("index"), item.get("value")
            if not isinstance(index, int) or not isinstance(value, int | float):
                return None
            sparse[index] = float(value)
        return sparse
    if isinstance(raw, dict):
        indices, values = raw.get("indices"), raw.get("values")
        if not isinstance(indices, list) or not isinstance(values, list):
            return None
        if len(indices) != len(values):
            return None
        return {int(i): float(v) for i, v in zip(indices, values, strict=True)}
    return None


class DashScopeNativeProvider:
    """One configured DashScope account on the native protocol."""

    def __init__(
        self,
        name: str,
        profile: ProviderProfile,
        *,
        api_key: str | None,
        missing_key_env: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not profile.base_url:
            from syncsvc.errors import ConfigurationError

            raise ConfigurationError(f"provider {name!r}: set base_url for profile {profile.name}")
        self._name = name
        self._profile = profile
        self._missing_key_env = missing_key_env
        self.http = HttpClient(
            profile.base_url,
            api_key=api_key,
            timeout=profile.timeout_seconds,
            concurrency=profile.concurrency,
            limiter=RateLimiter(profile.rpm, profile.tpm),
            transport=transport,
        )
        self._tokens = counter(profile.tokenizer)

    def __repr__(self) -> str:
        return f"DashScopeNativeProvider({self._name!r}, profile={self._profile.name!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def profile(self) -> ProviderProfile:
        return self._profile

    @property
    def limiter(self) -> RateLimiter | None:
        return self.http.limiter

    def _budget_tokens(self, texts: Sequence[str]) -> int:
        """Tokens to charge the TPM budget; counting is skipped when there is none."""
        if self._profile.tpm is None:
            return 0
        return sum(self._tokens.count(t) for t in texts)

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        if self._missing_key_env:
            raise ProviderError(
                ErrorKind.AUTH,
                f"environment variable {self._missing_key_env} is not set",
                code="MissingApiKey",
            )
        self._profile.model(request.model)
        parameters: dict[str, Any] = {
            "dimension": request.dimensions,
            "text_type": request.text_type.value,
            "output_type": "dense&sparse" if request.sparse else "dense",
        }
        # The API applies instructions to queries only; documents are embedded as they are.
        if request.instruct and request.text_type is TextType.QUERY:
            parameters["instruct"] = request.instruct
        payload = {
            "model": request.model,
            "input": {"texts": list(request.texts)},
            "parameters": parameters,
        }
        tokens = self._budget_tokens(request.texts)
        reply = await self.http.post(NATIVE_PATH, payload, tokens)
        body = reply.body if isinstance(reply.body, dict) else {}
        rid = request_id(reply, body.get("request_id"))
        if reply.status != 200:
            code = body.get("code")
            message = str(body.get("message") or "")
            raise classify(reply, str(code) if code else None, message, rid, self.http)
        return self._parse(reply, body, len(request.texts), request.sparse, rid)

    def _parse(
        self, reply: Reply, body: dict[str, Any], count: int, sparse: bool, rid: str | None
    ) -> EmbeddingResponse:
        output = body.get("output")
        embeddings = output.get("embeddings") if isinstance(output, dict) else None
        if not isinstance(embeddings, list):
            raise malformed(reply, "no 'output.embeddings' list", rid)
        dense: dict[int, tuple[float, ...]] = {}
        sparse_rows: dict[int, dict[int, float]] = {}
        for item in embeddings:
            if not isinstance(item, dict):
                raise malformed(reply, "an embedding is not an object", rid)
            index = item.get("text_index")
            vector = decode_vector(item.get("embedding"))
            if not isinstance(index, int) or vector is None:
                raise malformed(reply, "an embedding lacks a text_index or numbers", rid)
            dense[index] = vector
            if sparse:
                parsed = parse_sparse(item.get("sparse_embedding"))
                if parsed is None:
                    raise malformed(reply, "sparse output missing or unreadable", rid)
                sparse_rows[index] = parsed
        if sorted(dense) != list(range(count)):
            raise malformed(reply, f"text indices {sorted(dense)[:20]} for {count} inputs", rid)
        usage = body.get("usage")
        total = usage.get("total_tokens", 0) if isinstance(usage, dict) else 0
        return EmbeddingResponse(
            vectors=tuple(dense[i] for i in range(count)),
            total_tokens=total if isinstance(total, int) else 0,
            request_id=rid,
            sparse=tuple(sparse_rows[i] for i in range(count)) if sparse else None,
        )

    async def aclose(self) -> None:
        await self.http.aclose()
