"""The HTTP client is chosen by measurement: the provider's transports against the simulator.

The DashScope compatible-mode provider (``OpenAICompatibleProvider`` → ``HttpClient`` →
``httpx.AsyncClient``) embeds the same rows through the same ``Embedder`` path as the daemon
(syncsvc's own client, without the database), with each transport under it:

1. ``LeanTransport``, the hand-written HTTP/1.1 transport syncsvc ships;
2. ``httpx.AsyncHTTPTransport``, httpx's own (httpcore + h11 + anyio);
3. ``httpx_aiohttp.AiohttpTransport`` (aiohttp's C parser under httpx; the ``httpx-aiohttp``
   package, a bench-only dependency).

Two lean loops are the box limit: the same JSON POSTed by 8 workers with nothing of syncsvc
(no Embedder, no slots, no validation), once through ``httpx.AsyncClient`` + ``LeanTransport``
and once through raw aiohttp. The simulator (``syncsvc simulate-api``) runs in its own process,
so this process's CPU time is the client's alone.

Needs the bench extra: .venv/bin/pip install -e '.[bench]'
Run: .venv/bin/python bench/transport_bench.py       (20,000 rows at 0 and 50 ms, 3 repeats, ~6 min)
     .venv/bin/python bench/transport_bench.py --rows 2000 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import secrets
import ssl
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.backfill_bench import (
    DIMS,
    INPUTS_PER_REQUEST,
    KEY_ENV,
    Run,
    sim_providers,
    simulator,
    text_for,
)
from bench.report import machine, write_section
from syncsvc.core.runtime import tune_gc
from syncsvc.core.settings import Settings
from syncsvc.embed.embedder import Embedder
from syncsvc.embed.items import Embedded, EmbedInput, EmbedSpec
from syncsvc.embed.profiles import Protocol
from syncsvc.providers.openai import OpenAICompatibleProvider
from syncsvc.providers.registry import provider_profile
from syncsvc.providers.transport import LeanTransport

HEADING = "HTTP client"
MODEL = "text-embedding-v4"
WARM_ROWS = 80
"""Rows embedded before the clock starts: one request per connection, so every variant is
measured on a full keep-alive pool, not on connection set-up."""
RULE_MARGIN = 0.05
"""The hand-written transport stays only if it beats each replacement by more than this."""
SHIPPED = "LeanTransport (shipped)"
HTTPX = "httpx AsyncHTTPTransport"
AIOHTTP = "httpx-aiohttp AiohttpTransport"
LEAN_HTTPX = "lean loop: httpx + LeanTransport"
LEAN_AIOHTTP = "lean loop: raw aiohttp"
REPLACEMENTS = (HTTPX, AIOHTTP)


@dataclass(frozen=True)
class Sample:
    client: str
    latency_ms: float
    rows: int
    requests: int
    seconds: float
    cpu_seconds: float
    max_in_flight: int


@dataclass(frozen=True)
class Row:
    """The median of one client's repeats at one latency."""

    client: str
    latency_ms: float
    rows_per_second: float
    requests_per_second: float
    cpu_per_1000: float
    cpu_share: float
    """CPU seconds per wall second: the share of one core the client kept busy."""
    max_in_flight: int
    repeats: int


@dataclass(frozen=True)
class Context:
    sim_url: str
    key: str
    run: Run
    items: list[EmbedInput]


Measure = Callable[[Context], Awaitable[Sample]]


def _limits(concurrency: int) -> httpx.Limits:
    # What HttpClient gives its own client: httpx applies a client's limits only to the
    # transport it builds itself, so an injected transport must be given them directly.
    return httpx.Limits(
        max_connections=concurrency,
        max_keepalive_connections=concurrency,
        keepalive_expiry=60.0,
    )


TLS = ssl.create_default_context()
"""Built once (each build costs ~0.2 s of CPU); the simulator is plain HTTP, so it only
satisfies the constructors."""


TransportFactory = Callable[[int], httpx.AsyncBaseTransport]

TRANSPORTS: dict[str, TransportFactory] = {
    SHIPPED: lambda c: LeanTransport(ssl_context=TLS, max_idle=c),
    HTTPX: lambda c: httpx.AsyncHTTPTransport(verify=TLS, limits=_limits(c)),
}


def _aiohttp_transport(concurrency: int) -> httpx.AsyncBaseTransport:
    # Imported here so the other variants still run where the bench-only package is missing.
    from httpx_aiohttp import AiohttpTransport

    return AiohttpTransport(verify=TLS, limits=_limits(concurrency))


TRANSPORTS[AIOHTTP] = _aiohttp_transport


async def _sim_stats(admin: httpx.AsyncClient) -> dict[str, Any]:
    stats: dict[str, Any] = (await admin.get("/_sim/stats")).json()
    return stats


@dataclass
class _Window:
    """Wall and process CPU time around the measured part only."""

    started: float = 0.0
    cpu: float = 0.0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    def __enter__(self) -> _Window:
        # A collection owed by the previous variant must not land in this one's window.
        gc.collect()
        self.cpu = time.process_time()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu


async def _measured(
    ctx: Context, client: str, body: Callable[[list[EmbedInput]], Awaitable[None]]
) -> Sample:
    """Warm ``body`` up, reset the simulator's counters, then time ``body`` on the rest."""
    async with httpx.AsyncClient(base_url=ctx.sim_url) as admin:
        await body(ctx.items[:WARM_ROWS])
        await admin.post("/_sim/reset")
        rest = ctx.items[WARM_ROWS:]
        with _Window() as window:
            await body(rest)
        stats = await _sim_stats(admin)
    expected = -(-len(rest) // INPUTS_PER_REQUEST)
    if stats["ok"] != expected or stats["requests"] != expected or stats["inputs"] != len(rest):
        # A retry or a 429 would make the variants do different work: not comparable.
        raise RuntimeError(f"{client}: expected {expected} clean requests, simulator saw {stats}")
    return Sample(
        client=client,
        latency_ms=ctx.run.latency_ms,
        rows=len(rest),
        requests=stats["requests"],
        seconds=window.seconds,
        cpu_seconds=window.cpu_seconds,
        max_in_flight=stats["max_in_flight"],
    )


def via_provider(name: str) -> Measure:
    """syncsvc's real client: registry profile, provider, Embedder, with ``name``'s transport."""

    async def measure(ctx: Context) -> Sample:
        settings = Settings(providers=sim_providers(ctx.run, ctx.sim_url))
        profile = provider_profile("sim", settings)
        # What build_provider does for this profile, plus the transport it cannot be given.
        assert profile.protocol is Protocol.OPENAI, profile.protocol
        provider = OpenAICompatibleProvider(
            "sim",
            profile,
            api_key=os.environ[KEY_ENV],
            transport=TRANSPORTS[name](ctx.run.concurrency),
        )
        embedder = Embedder(provider, EmbedSpec(model=MODEL, dimensions=DIMS))

        async def body(items: list[EmbedInput]) -> None:
            # One call with every row: the provider's request slots keep ``concurrency``
            # requests in flight.
            outcomes = await embedder.embed(items)
            bad = [o for o in outcomes.values() if not isinstance(o, Embedded)]
            if bad or len(outcomes) != len(items):
                raise RuntimeError(f"{name}: {len(bad)} rows failed, e.g. {bad[:1]}")

        try:
            return await _measured(ctx, name, body)
        finally:
            await provider.aclose()

    return measure


def _payloads(items: list[EmbedInput]) -> Iterator[tuple[int, dict[str, Any]]]:
    """What the provider sends for these rows, 10 inputs a request, in order."""
    for start in range(0, len(items), INPUTS_PER_REQUEST):
        batch = items[start : start + INPUTS_PER_REQUEST]
        yield (
            len(batch),
            {
                "model": MODEL,
                "input": [item.text for item in batch],
                "encoding_format": "float",
                "dimensions": DIMS,
            },
        )


def _check(count: int, content: bytes) -> None:
    # orjson, the parser HttpClient uses: the loop then differs from the provider only in
    # what sits around the HTTP exchange, not in how fast the body is read.
    data = orjson.loads(content)["data"]
    if len(data) != count or len(data[-1]["embedding"]) != DIMS:
        raise RuntimeError("short reply")


async def _workers(
    concurrency: int, items: list[EmbedInput], post: Callable[[bytes], Awaitable[bytes]]
) -> None:
    """``concurrency`` workers sharing one iterator of requests: exactly that many in flight."""
    requests = _payloads(items)

    async def worker() -> None:
        for count, payload in requests:
            _check(count, await post(orjson.dumps(payload)))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def _headers(key: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "User-Agent": "syncsvc",
        "Authorization": f"Bearer {key}",
    }


async def lean_httpx(ctx: Context) -> Sample:
    concurrency = ctx.run.concurrency
    client = httpx.AsyncClient(
        base_url=f"{ctx.sim_url}/compatible-mode/v1/",
        headers=_headers(ctx.key),
        timeout=30.0,
        transport=LeanTransport(ssl_context=TLS, max_idle=concurrency),
    )

    async def post(content: bytes) -> bytes:
        response = await client.post("embeddings", content=content)
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}")
        return response.content

    try:
        return await _measured(ctx, LEAN_HTTPX, lambda items: _workers(concurrency, items, post))
    finally:
        await client.aclose()


async def lean_aiohttp(ctx: Context) -> Sample:
    concurrency = ctx.run.concurrency
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=60.0),
        headers=_headers(ctx.key),
        timeout=aiohttp.ClientTimeout(total=30.0),
    )
    url = f"{ctx.sim_url}/compatible-mode/v1/embeddings"

    async def post(content: bytes) -> bytes:
        async with session.post(url, data=content) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}")
            return body

    try:
        return await _measured(ctx, LEAN_AIOHTTP, lambda items: _workers(concurrency, items, post))
    finally:
        await session.close()


CLIENTS: dict[str, Measure] = {
    SHIPPED: via_provider(SHIPPED),
    HTTPX: via_provider(HTTPX),
    AIOHTTP: via_provider(AIOHTTP),
    LEAN_HTTPX: lean_httpx,
    LEAN_AIOHTTP: lean_aiohttp,
}


def rows_for(count: int) -> list[EmbedInput]:
    # The same ~40-token "title\n\nbody" texts as backfill_bench.py (all distinct: no dedupe).
    rng = random.Random(7)
    return [EmbedInput(i, "\n\n".join(text_for(rng, i))) for i in range(1, count + 1)]


def bench(
    rows: int, latencies: list[float], concurrency: int, repeats: int, clients: list[str]
) -> list[Sample]:
    items = rows_for(rows + WARM_ROWS)
    samples: list[Sample] = []
    for latency in latencies:
        key = secrets.token_hex(16)
        os.environ[KEY_ENV] = key
        run = Run(rows, latency, concurrency, None, 0.0, 0.0)
        with simulator(run, key) as sim_url:
            ctx = Context(sim_url, key, run, items)
            for repeat in range(repeats):
                # Rotate the order each repeat: drift on a shared machine (another job, the
                # simulator's own warm-up) then spreads over every variant, not one.
                shift = repeat % len(clients)
                for client in clients[shift:] + clients[:shift]:
                    sample = asyncio.run(CLIENTS[client](ctx))
                    print(
                        f"{latency:g} ms, repeat {repeat + 1}, {client}: "
                        f"{sample.rows / sample.seconds:,.0f} rows/s, "
                        f"{1000 * sample.cpu_seconds / sample.requests:.2f} CPU s / 1,000 requests",
                        flush=True,
                    )
                    samples.append(sample)
    return samples


def summarise(samples: list[Sample]) -> list[Row]:
    groups: dict[tuple[float, str], list[Sample]] = {}
    for sample in samples:
        groups.setdefault((sample.latency_ms, sample.client), []).append(sample)
    rows = []
    for (latency, client), group in groups.items():
        rows.append(
            Row(
                client=client,
                latency_ms=latency,
                rows_per_second=statistics.median(s.rows / s.seconds for s in group),
                requests_per_second=statistics.median(s.requests / s.seconds for s in group),
                cpu_per_1000=statistics.median(1000 * s.cpu_seconds / s.requests for s in group),
                cpu_share=statistics.median(s.cpu_seconds / s.seconds for s in group),
                max_in_flight=max(s.max_in_flight for s in group),
                repeats=len(group),
            )
        )
    return rows


def verdict(rows: list[Row], latency: float = 50.0) -> str:
    """The rule applied: keep LeanTransport only if it beats every replacement by > 5% on
    throughput or on CPU per request at 50 ms."""
    at = {r.client: r for r in rows if r.latency_ms == latency}
    shipped = at.get(SHIPPED)
    if shipped is None:
        return f"No {SHIPPED} figure at {latency:g} ms: the rule was not applied."
    parts: list[str] = []
    # Replacements the shipped transport does not beat by the margin: it would go for one.
    matches: list[str] = []
    for name in REPLACEMENTS:
        other = at.get(name)
        if other is None:
            continue
        faster = shipped.rows_per_second / other.rows_per_second - 1
        leaner = 1 - shipped.cpu_per_1000 / other.cpu_per_1000
        wins = faster > RULE_MARGIN or leaner > RULE_MARGIN
        if not wins:
            matches.append(name)
        parts.append(
            f"{faster:+.1%} throughput and {-leaner:+.1%} CPU per request against {name} "
            f"({'wins' if wins else 'does not win'})"
        )
    if not parts:
        return f"No replacement measured at {latency:g} ms: the rule was not applied."
    # REPLACEMENTS lists httpx's own first: of two equals, the one with no extra dependency.
    decision = (
        f"replace the hand-written transport with {matches[0]}"
        if matches
        else "keep the hand-written transport"
    )
    return f"At {latency:g} ms, {SHIPPED} has " + "; ".join(parts) + f": **{decision}**."


def report(rows: list[Row], rows_each: int, concurrency: int, repeats: int) -> str:
    order = list(CLIENTS)
    rows = sorted(rows, key=lambda r: (r.latency_ms, order.index(r.client)))
    lines = [
        f"{machine()}; simulator in its own process; text-embedding-v4 at {DIMS} dims through "
        f"the DashScope compatible-mode provider, {INPUTS_PER_REQUEST} inputs per request, "
        f"{concurrency} in flight, {rows_each:,} rows (~40 tokens each) per run, median of "
        f"{repeats} interleaved repeats. `python bench/transport_bench.py`",
        "",
        "| client | latency | rows/s | requests/s | % of ceiling | CPU s / 1,000 requests | "
        "CPU (share of a core) | max in flight |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ceiling = (
            f"{100 * r.requests_per_second / (concurrency / (r.latency_ms / 1000)):.0f}%"
            if r.latency_ms
            else "—"
        )
        lines.append(
            f"| {r.client} | {r.latency_ms:g} ms | {r.rows_per_second:,.0f} | "
            f"{r.requests_per_second:,.0f} | {ceiling} | {r.cpu_per_1000:.2f} | "
            f"{100 * r.cpu_share:.0f}% | {r.max_in_flight} |"
        )
    lines += [
        "",
        "The first three rows are syncsvc's own client (`Embedder` → `OpenAICompatibleProvider` "
        "→ `HttpClient` → `httpx.AsyncClient`) with each transport under it; the lean loops "
        "POST the same JSON with nothing of syncsvc around it and parse it with orjson, the "
        "box limit. CPU is this process's user + system time (`time.process_time`) over the "
        "measured rows; the simulator's is not in it. The ceiling at 50 ms is in-flight ÷ "
        "latency; at 0 ms the simulator (one process, one core: *max in flight* shows it serving "
        "about one request at a time) is the limit as much as the client, so read the CPU "
        "column there.",
        "",
        "Rule: keep the hand-written `LeanTransport` only if, at 50 ms, it beats each "
        "off-the-shelf transport by more than 5% of throughput or of CPU per request; "
        "otherwise it gives way to one it does not beat (httpx's own first: no extra "
        "dependency, no code of ours to maintain). " + verdict(rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per measured run")
    parser.add_argument("--latency-ms", type=float, action="append", help="default: 0 and 50")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--client", choices=list(CLIENTS), action="append", help="default: all of them"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update BENCHMARKS.md")
    args = parser.parse_args()
    tune_gc()  # as `syncsvc run` does: the collector's pauses are part of the daemon's client
    clients = args.client or list(CLIENTS)
    samples = bench(
        args.rows, args.latency_ms or [0.0, 50.0], args.concurrency, args.repeats, clients
    )
    body = report(summarise(samples), args.rows, args.concurrency, args.repeats)
    print(body)
    if not args.no_write:
        write_section(HEADING, body)


if __name__ == "__main__":
    main()
