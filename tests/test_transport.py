"""The lean HTTP/1.1 transport over real sockets: framing, keep-alive, compression, failures.

A small asyncio server answers each path in one of the ways HTTP allows (Content-Length,
chunked, close-delimited, gzip, dropped connections, silence), so every branch the embedding
APIs and gateways might take is exercised over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import itertools
import json
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from syncsvc.embed.provider import ErrorKind, ProviderError
from syncsvc.providers.http import HttpClient
from syncsvc.providers.transport import LeanTransport

BODY = {"data": [{"embedding": [0.5, -0.25], "index": 0}], "usage": {"total_tokens": 3}}
RAW = json.dumps(BODY).encode()


@dataclass
class Server:
    url: str
    requests: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    """(connection number, path, head, body) per request served."""


async def _answer(path: str, writer: asyncio.StreamWriter) -> bool:
    """Write the reply for ``path``; False when the connection must close after it."""
    if path.endswith("/length"):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(RAW), RAW))
    elif path.endswith("/chunked"):
        half = len(RAW) // 2
        writer.write(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"%x\r\n%s\r\n%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n"
            % (half, RAW[:half], len(RAW) - half, RAW[half:])
        )
    elif path.endswith("/gzip"):
        packed = gzip.compress(RAW)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(packed), packed)
        )
    elif path.endswith("/until-close"):
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + RAW)
        return False
    elif path.endswith("/drop-after"):
        # Answers, then closes without saying so: the next request finds a dead connection.
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(RAW), RAW))
        return False
    elif path.endswith("/interim"):
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(RAW), RAW))
    elif path.endswith("/error"):
        text = b'{"error": {"code": "InvalidParameter", "message": "bad input"}}'
        writer.write(
            b"HTTP/1.1 400 Bad Request\r\nx-request-id: rid-7\r\nContent-Length: %d\r\n\r\n%s"
            % (len(text), text)
        )
    elif path.endswith("/silent"):
        await asyncio.sleep(30)
    return True


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    numbers = itertools.count(1)
    found = Server("")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(numbers)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next(
                    (int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length")),
                    0,
                )
                body = await reader.readexactly(length)
                found.requests.append((number, path, head.decode("latin-1"), body))
                keep = await _answer(path, writer)
                await writer.drain()
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    found.url = f"http://127.0.0.1:{port}"
    yield found
    listener.close()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[HttpClient]:
    http = HttpClient(server.url, api_key="sk-secret", timeout=0.5, concurrency=2)
    yield http
    await http.aclose()


@pytest.mark.parametrize("path", ["length", "chunked", "gzip", "until-close", "interim"])
async def test_every_framing_yields_the_same_body(
    client: HttpClient, server: Server, path: str
) -> None:
    reply = await client.post(path, {"input": ["ünïcode text"]}, tokens=3)
    assert (reply.status, reply.body) == (200, BODY)
    assert json.loads(server.requests[0][3]) == {"input": ["ünïcode text"]}


async def test_framed_replies_keep_the_connection_alive(client: HttpClient, server: Server) -> None:
    for path in ("length", "chunked", "gzip", "length"):
        assert (await client.post(path, {}, tokens=0)).body == BODY
    assert [number for number, *_ in server.requests] == [1, 1, 1, 1]


async def test_a_close_delimited_reply_is_not_reused(client: HttpClient, server: Server) -> None:
    await client.post("until-close", {}, tokens=0)
    await client.post("length", {}, tokens=0)
    assert [number for number, *_ in server.requests] == [1, 2]


async def test_a_connection_the_server_dropped_while_idle_is_replaced_silently(
    client: HttpClient, server: Server
) -> None:
    assert (await client.post("drop-after", {}, tokens=0)).body == BODY
    await asyncio.sleep(0.05)  # the server's close reaches the idle connection
    assert (await client.post("length", {}, tokens=0)).body == BODY
    assert [number for number, *_ in server.requests] == [1, 2]


async def test_error_replies_keep_status_headers_and_body(client: HttpClient) -> None:
    reply = await client.post("error", {}, tokens=0)
    assert reply.status == 400
    assert reply.headers["x-request-id"] == "rid-7"
    assert reply.body == {"error": {"code": "InvalidParameter", "message": "bad input"}}


async def test_the_request_head_carries_key_type_length_and_host(
    client: HttpClient, server: Server
) -> None:
    await client.post("length", {"a": 1}, tokens=0)
    _, _, head, body = server.requests[0]
    lines = {
        line.split(": ", 1)[0].lower(): line.split(": ", 1)[1]
        for line in head.split("\r\n")[1:]
        if line
    }
    assert head.startswith("POST /length HTTP/1.1\r\n")
    assert lines["authorization"] == "Bearer sk-secret"
    assert lines["content-type"] == "application/json"
    assert lines["content-length"] == str(len(body)) == "7"
    assert lines["host"] == server.url.removeprefix("http://")


async def test_silence_becomes_a_retryable_timeout(client: HttpClient) -> None:
    with pytest.raises(ProviderError) as caught:
        await client.post("silent", {}, tokens=0)
    assert (caught.value.kind, caught.value.code) == (ErrorKind.RETRYABLE, "Timeout")


async def test_a_refused_connection_becomes_a_retryable_connection_error() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    http = HttpClient(f"http://127.0.0.1:{port}", api_key="sk-secret", timeout=1, concurrency=1)
    try:
        with pytest.raises(ProviderError) as caught:
            await http.post("length", {}, tokens=0)
    finally:
        await http.aclose()
    assert (caught.value.kind, caught.value.code) == (ErrorKind.RETRYABLE, "ConnectionError")
    assert "sk-secret" not in str(caught.value)


async def test_a_connection_idle_past_the_expiry_is_not_reused(
    client: HttpClient, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncsvc.providers import transport

    await client.post("length", {}, tokens=0)
    monkeypatch.setattr(transport, "KEEPALIVE_EXPIRY", 0.0)
    await client.post("length", {}, tokens=0)
    assert [number for number, *_ in server.requests] == [1, 2]


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_https_verifies_the_server_certificate(certificate: tuple[Path, Path]) -> None:
    """TLS through the lean transport: a trusted certificate works, an untrusted one fails."""
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(RAW), RAW))
            await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
    url = f"https://localhost:{listener.sockets[0].getsockname()[1]}/x"
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(
            transport=LeanTransport(ssl_context=trusting, max_idle=1)
        ) as client:
            reply = await client.post(url, content=b"{}")
        assert (reply.status_code, reply.json()) == (200, BODY)
        async with httpx.AsyncClient(
            transport=LeanTransport(ssl_context=ssl.create_default_context(), max_idle=1)
        ) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.post(url, content=b"{}")
    finally:
        listener.close()


async def test_a_proxy_named_in_the_environment_is_used(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lean transport speaks to origins directly, so a configured proxy hands the request
    to httpx's own transport: the proxy sees the absolute URL."""
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    http = HttpClient("http://api.example.invalid/v1", api_key="k", timeout=2, concurrency=1)
    try:
        reply = await http.post("length", {}, tokens=0)
    finally:
        await http.aclose()
    assert reply.body == BODY
    assert server.requests[0][1] == "http://api.example.invalid/v1/length"
