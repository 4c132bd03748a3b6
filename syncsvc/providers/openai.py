"""The OpenAI-compatible wire: DashScope compatible mode, gateways, vLLM / TEI / Ollama hosts.

``POST {base_url}/embeddings`` with ``{"model", "input": [...], "dimensions"?,
"encoding_format": "float"}``. ``float`` is always asked for (the official SDK defaults to
base64, which DashScope does not document), but a base64 answer is still decoded.
"""

from __future__ import annotations

import base64
import binascii
import logging
import struct
from typing import Any

from syncsvc.core.models import TextType
from syncsvc.embed.profiles import ModelProfile
from syncsvc.embed.provider import EmbeddingRequest, EmbeddingResponse, ProviderError
from syncsvc.providers.account import HttpProvider
from syncsvc.providers.http import Reply, classify, malformed, request_id

logger = logging.getLogger(__name__)


def format_query(model: ModelProfile, request: EmbeddingRequest, text: str) -> str:
    """Apply the model's client-side query instruction (Qwen3: 'Instruct: ...\\nQuery:...')."""
    if request.text_type is not TextType.QUERY or model.query_instruction_format is None:
        return text
    instruct = request.instruct or model.default_instruct
    if not instruct:
        return text
    return model.query_instruction_format.format(instruct=instruct, query=text)


def decode_vector(raw: object) -> tuple[float, ...] | None:
    """A JSON float list, or a base64 string of little-endian float32s; None if neither."""
    if isinstance(raw, list):
        # That every element is a finite number is the embedder's check (one pass for both).
        return tuple(raw)
    if isinstance(raw, str):
        try:
            data = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            return None
        if len(data) % 4:
            return None
        return struct.unpack(f"<{len(data) // 4}f", data)
    return None


class OpenAICompatibleProvider(HttpProvider):
    """One configured OpenAI-compatible account (see ``syncsvc.providers.registry``)."""

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        self._check_key()
        model = self._profile.model(request.model)
        texts = [format_query(model, request, t) for t in request.texts]
        payload: dict[str, Any] = {
            "model": request.model,
            "input": texts,
            "encoding_format": "float",
        }
        if model.send_dimensions or request.dimensions != model.default_dimensions:
            payload["dimensions"] = request.dimensions
        tokens = self._budget_tokens(texts)
        reply = await self.http.post(
            "embeddings", payload, tokens, request.priority, request.tenant, request.proceed
        )
        body = reply.body if isinstance(reply.body, dict) else {}
        rid = request_id(reply, body.get("request_id") or body.get("id"))
        if reply.status != 200:
            raise self._error(reply, body, rid)
        return self._parse(reply, body, len(texts), rid)

    def _error(self, reply: Reply, body: dict[str, Any], rid: str | None) -> ProviderError:
        error = body.get("error")
        if isinstance(error, dict):
            code = error.get("code") or error.get("type")
            message = str(error.get("message") or "")
        else:
            # Some hosts answer in the DashScope native shape even on compatible routes.
            code = body.get("code")
            message = str(body.get("message") or body.get("detail") or error or "")
        return classify(reply, str(code) if code else None, message, rid, self.http)

    def _parse(
        self, reply: Reply, body: dict[str, Any], count: int, rid: str | None
    ) -> EmbeddingResponse:
        data = body.get("data")
        if not isinstance(data, list):
            raise malformed(reply, "no 'data' list", rid)
        rows: dict[int, tuple[float, ...]] = {}
        for position, item in enumerate(data):
            if not isinstance(item, dict):
                raise malformed(reply, "a 'data' item is not an object", rid)
            index = item.get("index", position)
            vector = decode_vector(item.get("embedding"))
            if not isinstance(index, int) or vector is None:
                raise malformed(reply, "an embedding lacks an index or numbers", rid)
            rows[index] = vector
        if sorted(rows) != list(range(count)):
            raise malformed(reply, f"indices {sorted(rows)[:20]} for {count} inputs", rid)
        usage = body.get("usage")
        total = 0
        if isinstance(usage, dict):
            value = usage.get("total_tokens", usage.get("prompt_tokens", 0))
            total = value if isinstance(value, int) else 0
        return EmbeddingResponse(
            vectors=tuple(rows[i] for i in range(count)), total_tokens=total, request_id=rid
        )
