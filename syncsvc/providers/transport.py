"""A lean HTTP/1.1 keep-alive transport under ``httpx.AsyncClient`` for embedding APIs.

httpx's default transport (httpcore, h11 and anyio, all pure Python) costs about 0.7 ms of
event-loop time per request. At 8 requests in flight and 50 ms latency that is several percent
of throughput, and every other coroutine of the daemon waits behind it. Embedding APIs need
little of HTTP: a POST with a known body, a reply framed by Content-Length or chunked encoding,
and kept-alive connections. This transport does exactly that over asyncio streams; httpx still
builds the requests, decodes compressed bodies and raises its usual exceptions, which the
callers already classify. It speaks to the origin directly: ``HttpClient`` leaves httpx its own
transport when the environment names a proxy.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx

_MAX_HEAD = 64 * 1024
KEEPALIVE_EXPIRY = 60.0
"""Idle connections older than this are closed rather than reused: a NAT or load balancer may
have dropped them silently, and a request on one would wait for its full timeout."""
_Origin = tuple[str, str, int]


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0

    def close(self) -> None:
        self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio streams with a keep-alive pool per origin."""

    def __init__(self, *, ssl_context: ssl.SSLContext, max_idle: int) -> None:
        self._ssl = ssl_context
        self._max_idle = max_idle
        self._idle: dict[_Origin, list[_Connection]] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = (request.url.scheme, request.url.host, request.url.port or _port(request.url))
        payload = _encode(request, await request.aread())
        reused = self._take(origin)
        if reused is not None:
            try:
                return await self._exchange(reused, origin, payload, request)
            except _StaleConnection:
                pass  # closed by the server while idle: one fresh try (embedding is repeatable)
        connection = await self._connect(origin, request, _timeout(request, "connect"))
        try:
            return await self._exchange(connection, origin, payload, request)
        except _StaleConnection:
            raise httpx.RemoteProtocolError(
                "server disconnected without sending a response", request=request
            ) from None

    async def aclose(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        fresh_after = time.monotonic() - KEEPALIVE_EXPIRY
        while idle:
            connection = idle.pop()
            usable = not connection.reader.at_eof() and not connection.writer.is_closing()
            if usable and connection.idle_since > fresh_after:
                return connection
            connection.close()
        return None

    def _give_back(self, origin: _Origin, connection: _Connection) -> None:
        idle = self._idle.setdefault(origin, [])
        connection.idle_since = time.monotonic()
        if len(idle) < self._max_idle:
            idle.append(connection)
        else:
            connection.close()

    async def _connect(
        self, origin: _Origin, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        scheme, host, port = origin
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    host,
                    port,
                    ssl=self._ssl if scheme == "https" else None,
                    server_hostname=host if scheme == "https" else None,
                    limit=_MAX_HEAD,
                ),
                timeout,
            )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port}", request=request) from None
        except (OSError, ssl.SSLError) as error:
            raise httpx.ConnectError(f"{type(error).__name__}: {error}", request=request) from None
        return _Connection(reader, writer)

    async def _exchange(
        self, connection: _Connection, origin: _Origin, payload: bytes, request: httpx.Request
    ) -> httpx.Response:
        ok = False
        try:
            # One deadline for the whole exchange: an embedding reply is useful only whole.
            async with asyncio.timeout(_timeout(request, "read")):
                connection.writer.write(payload)
                await connection.writer.drain()
                status, headers, keep_alive = await _read_head(connection.reader)
                while 100 <= status < 200 and status != 101:
                    # Interim replies (100 Continue, 103 Early Hints) precede the real one.
                    status, headers, keep_alive = await _read_head(connection.reader)
                content, framed = await _read_body(connection.reader, headers, request, status)
            ok = True
        except TimeoutError:
            raise httpx.ReadTimeout("no complete response in time", request=request) from None
        except _StaleConnection:
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            raise httpx.ReadError(f"{type(error).__name__}: {error}", request=request) from None
        except ValueError as error:
            raise httpx.RemoteProtocolError(str(error), request=request) from None
        finally:
            if not ok:
                connection.close()
        if keep_alive and framed:
            self._give_back(origin, connection)
        else:
            connection.close()
        return httpx.Response(
            status,
            headers=headers,
            stream=httpx.ByteStream(content),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )


class _StaleConnection(Exception):
    """The connection closed before any byte of a response."""


def _timeout(request: httpx.Request, kind: str) -> float | None:
    timeouts: dict[str, Any] = request.extensions.get("timeout", {})
    value = timeouts.get(kind)
    return float(value) if value is not None else None


def _port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


def _encode(request: httpx.Request, body: bytes) -> bytes:
    target = request.url.raw_path.decode("ascii")
    lines = [f"{request.method} {target} HTTP/1.1"]
    seen_length = False
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding":
            continue  # the body is sent whole, with its length
        seen_length = seen_length or lowered == b"content-length"
        lines.append(f"{name.decode('latin-1')}: {value.decode('latin-1')}")
    if not seen_length and (body or request.method in ("POST", "PUT", "PATCH")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, list[tuple[bytes, bytes]], bool]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as error:
        if not error.partial:
            raise _StaleConnection from None
        raise
    status_line, *header_lines = head[:-4].split(b"\r\n")
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(parts[1])
    headers = []
    for line in header_lines:
        name, sep, value = line.partition(b":")
        if not sep:
            raise ValueError(f"malformed header line: {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    connection = _header(headers, b"connection")
    keep_alive = parts[0] == b"HTTP/1.1" and (connection or b"").lower() != b"close"
    return status, headers, keep_alive


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


async def _read_body(
    reader: asyncio.StreamReader,
    headers: list[tuple[bytes, bytes]],
    request: httpx.Request,
    status: int,
) -> tuple[bytes, bool]:
    """The body, and whether it was framed (so the connection may carry another request)."""
    if request.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return b"", True
    if (_header(headers, b"transfer-encoding") or b"").lower().endswith(b"chunked"):
        chunks: list[bytes] = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers (rare) end with an empty line.
                while await reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return b"".join(chunks), True
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = _header(headers, b"content-length")
    if length is not None:
        return await reader.readexactly(int(length)), True
    # Neither: the body runs to the end of the connection (which then cannot be reused).
    return await reader.read(), False
