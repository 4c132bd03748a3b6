"""Request parsing and error envelopes of the two DashScope wire protocols, server side."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.responses import Response


@dataclass(frozen=True)
class ErrorSpec:
    status: int
    native_code: str
    """``code`` in the native envelope, e.g. ``Throttling.RateQuota``."""
    compatible_code: str
    """``error.code`` / ``error.type`` in the compatible envelope, e.g. ``limit_requests``."""
    message: str


@dataclass(frozen=True)
class Parsed:
    model: str
    texts: list[str]
    dimensions: int | None
    encoding_format: str = "float"
    sparse: bool = False


def error_response(
    spec: ErrorSpec, native: bool, rid: str, headers: dict[str, str] | None = None
) -> Response:
    """The documented envelope: native ``{code, message, request_id}``; compatible
    ``{error: {message, type, param, code}, request_id}``."""
    body: dict[str, Any]
    if native:
        body = {"code": spec.native_code, "message": spec.message, "request_id": rid}
    else:
        body = {
            "error": {
                "message": spec.message,
                "type": spec.compatible_code,
                "param": None,
                "code": spec.compatible_code,
            },
            "request_id": rid,
        }
    return Response(
        json.dumps(body),
        spec.status,
        {"x-request-id": rid, **(headers or {})},
        media_type="application/json",
    )


def _bad(message: str) -> ErrorSpec:
    return ErrorSpec(400, "InvalidParameter", "invalid_request_error", message)


def _dimensions(value: object) -> int | ErrorSpec | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        return _bad("The dimension parameter must be an integer.")
    return value


def parse_compatible(body: object) -> Parsed | ErrorSpec:
    """``{"model", "input": str | [str], "dimensions"?, "encoding_format"?}``."""
    if not isinstance(body, dict):
        return _bad("The request body must be a JSON object.")
    model, raw = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model:
        return _bad("Model not specified.")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
        return _bad("input must be a string or a non-empty list of strings.")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        return _bad("encoding_format must be 'float' or 'base64'.")
    dims = _dimensions(body.get("dimensions"))
    if isinstance(dims, ErrorSpec):
        return dims
    return Parsed(model=model, texts=texts, dimensions=dims, encoding_format=str(encoding))


def parse_native(body: object) -> Parsed | ErrorSpec:
    """``{"model", "input": {"texts"}, "parameters": {"dimension", "text_type", ...}}``."""
    if not isinstance(body, dict):
        return _bad("The request body must be a JSON object.")
    model, inputs = body.get("model"), body.get("input")
    if not isinstance(model, str) or not model:
        return _bad("Model not specified.")
    texts = inputs.get("texts") if isinstance(inputs, dict) else None
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts) or not texts:
        return _bad("input.texts must be a non-empty list of strings.")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        return _bad("parameters must be an object.")
    if parameters.get("text_type", "document") not in ("document", "query"):
        return _bad("text_type must be 'document' or 'query'.")
    output_type = parameters.get("output_type", "dense")
    if output_type not in ("dense", "sparse", "dense&sparse"):
        return _bad("output_type must be 'dense', 'sparse' or 'dense&sparse'.")
    dims = _dimensions(parameters.get("dimension"))
    if isinstance(dims, ErrorSpec):
        return dims
    return Parsed(model=model, texts=texts, dimensions=dims, sparse=output_type != "dense")
