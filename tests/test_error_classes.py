"""The mapping of API errors to what happens (docs/operations.md, "API errors"): retry, fail
the row, or pause the target. Pure logic: each reply as the simulator or a gateway sends it."""

from __future__ import annotations

import httpx
import pytest

from syncsvc.embed.provider import ErrorKind
from syncsvc.providers.http import HttpClient, Reply, classify

ROWS = [
    # status, code, message, kind
    (429, "Throttling.RateQuota", "Requests rate limit exceeded", ErrorKind.RATE_LIMITED),
    (500, "InternalError", "An internal error has occured", ErrorKind.RETRYABLE),
    (408, None, "timeout", ErrorKind.RETRYABLE),
    (401, "InvalidApiKey", "Invalid API-key provided.", ErrorKind.AUTH),
    (400, "Arrearage", "Access denied", ErrorKind.AUTH),
    (404, None, "Not Found", ErrorKind.AUTH),
    (
        400,
        "DataInspectionFailed",
        "Input data may contain inappropriate content.",
        ErrorKind.BAD_INPUT,
    ),
    (400, "InvalidParameter", "Range of input length should be [1, 8192]", ErrorKind.BAD_INPUT),
    (400, "InvalidParameter", "Model not exist.", ErrorKind.AUTH),
    (400, "InvalidParameter", "The dimension parameter is invalid", ErrorKind.AUTH),
    # Too many inputs: bisecting heals it (smaller batches pass), so it is about the inputs.
    (400, "InvalidParameter", "batch size is invalid: input.contents", ErrorKind.BAD_INPUT),
    # A bare 400 (e.g. an API key pasted with a trailing CR) is every request's problem.
    (400, None, "", ErrorKind.AUTH),
    (400, "SomeGatewayRule", "request rejected", ErrorKind.AUTH),
]


@pytest.mark.parametrize(("status", "code", "message", "kind"), ROWS)
def test_error_mapping(status: int, code: str | None, message: str, kind: ErrorKind) -> None:
    client = HttpClient("http://127.0.0.1:9/v1", api_key="k", timeout=1, concurrency=1)
    reply = Reply(status=status, headers=httpx.Headers(), body=None, elapsed=0.0)
    assert classify(reply, code, message, "req-1", client).kind is kind


def test_a_key_with_a_trailing_cr_is_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    from syncsvc.core.settings import Settings
    from syncsvc.providers.registry import build_provider

    monkeypatch.setenv("DASHSCOPE_API_KEY", "sk-abc\r\n")
    settings = Settings(providers={"dashscope": {"profile": "dashscope-intl"}})  # type: ignore[dict-item]
    provider = build_provider("dashscope", settings)
    sent = provider.http._client.headers["authorization"]  # type: ignore[attr-defined]
    assert sent == "Bearer sk-abc"
