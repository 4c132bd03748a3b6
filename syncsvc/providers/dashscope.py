"""The DashScope native wire: text_type, instruct and sparse output, which compatible mode lacks.

``POST {base_url}/services/embeddings/text-embedding/text-embedding`` with
``{"model", "input": {"texts": [...]}, "parameters": {"dimension", "text_type", "instruct"?,
"output_type"}}``; the reply is ``{"output": {"embeddings": [{"text_index", "embedding",
"sparse_embedding"?}]}, "usage": {"total_tokens"}, "request_id"}`` and an error is
``{"code", "message", "request_id"}``.
"""

from __future__ import annotations

import logging
from typing import Any

from syncsvc.core.models import TextType
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse
from syncsvc.providers.account import HttpProvider
from syncsvc.providers.http import Reply, classify, malformed, request_id
from syncsvc.providers.openai import decode_vector

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


class DashScopeNativeProvider(HttpProvider):
    """One configured DashScope account on the native protocol."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self._check_key()
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
        reply = await self.http.post(
            NATIVE_PATH, payload, tokens, request.priority, request.tenant, request.proceed
        )
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
