"""Text queries asked for from SQL (``CALL syncsvc.embed_query``), embedded by the daemon.

The request table is the truth and ``syncsvc_queries`` only wakes: the daemon also looks for
pending requests on its lease loop. Each query is embedded by ``search.embed_query``, the same
code the Python client and the CLI use, so it lands in ``syncsvc.query_cache`` under the same
key, and a later search by the same text costs no API call.

The daemon spends on behalf of the role that filed a request, so it answers only within that
role's search grant and its limits (``max_query_tokens`` per query, ``max_queries_per_minute``
that reach the provider; a cached query is free). A request over a limit is ``refused`` with
the reason, which ``embed_query`` raises. The text is erased once answered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from syncsvc.core.errors import SyncsvcError
from syncsvc.core.models import Generation, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles
from syncsvc.db.catalog import load_targets
from syncsvc.embed.items import ProviderPaused
from syncsvc.embed.provider import EmbeddingProvider
from syncsvc.embed.tokens import counter
from syncsvc.observe import metrics
from syncsvc.search import engine as search

logger = logging.getLogger(__name__)

QUERIES_CHANNEL = "syncsvc_queries"


@dataclass(frozen=True)
class Refusal:
    """Why a role's request is not embedded (it is not billed either)."""

    reason: str


async def embed_pending(
    pool: AsyncConnectionPool[AsyncConn],
    provider_for: Callable[[str], EmbeddingProvider],
    limit: int = 50,
    *,
    text_retention_seconds: float = 0.0,
) -> int:
    """Embed up to ``limit`` pending query requests; returns how many were answered."""
    async with pool.connection() as conn:
        cur = await conn.execute(sqlfiles.query("search", "pending_queries"), {"limit": limit})
        pending = await cur.fetchall()
        if not pending:
            return 0
        generations = {g.id: (t, g) for t in await load_targets(conn) for g in t.generations}
    keep_text = text_retention_seconds > 0
    answered = 0
    for request in pending:
        found = generations.get(request["generation_id"])
        if found is None:
            continue
        target, generation = found
        key = {
            "generation_id": request["generation_id"],
            "requested_by": request["requested_by"],
            "text_hash": request["text_hash"],
            "keep_text": keep_text,
        }
        role = request["requested_by"]
        async with pool.connection() as conn:
            try:
                provider = provider_for(generation.provider)
                refusal = await _check(conn, provider, target, generation, request)
                if isinstance(refusal, Refusal):
                    metrics.record_query(role, "refused")
                    await conn.execute(
                        sqlfiles.query("search", "query_failed"),
                        {**key, "state": "refused", "error": refusal.reason},
                    )
                    answered += 1
                    continue
                billed = refusal
                query = await search.embed_query(
                    conn, provider, target, request["query"], generation
                )
                if billed and query.cached:
                    # Another daemon cached it meanwhile: free after all.
                    await conn.execute(sqlfiles.query("search", "query_unbilled"), key)
                digest = search.query_hash(
                    search.query_instruct(provider, generation), request["query"]
                )
                await conn.execute(
                    sqlfiles.query("search", "query_done"),
                    {**key, "query_hash": digest, "tokens": query.tokens},
                )
                if query.cached:
                    metrics.record_query(role, "cached")
                else:
                    metrics.record_query(role, "embedded", query.tokens)
            except (SyncsvcError, ProviderPaused) as exc:
                logger.warning("query for %s could not be embedded: %s", target.name, exc)
                metrics.record_query(role, "failed")
                await conn.execute(
                    sqlfiles.query("search", "query_failed"),
                    {**key, "state": "failed", "error": str(exc)},
                )
        answered += 1
    return answered


async def _check(
    conn: AsyncConn,
    provider: EmbeddingProvider,
    target: Target,
    generation: Generation,
    request: dict[str, Any],
) -> Refusal | bool:
    """Refuse what the role may not spend; otherwise whether the request counts against its
    budget (it does unless the query is cached, or the role owns syncsvc)."""
    role = request["requested_by"]
    if request["owner"]:
        return False
    if request["max_query_tokens"] is None:
        # Filed under a grant since revoked.
        return Refusal(
            f"role {role} may not search target {target.name} "
            f"(syncsvc grant search {role} --target {target.name})"
        )
    text: str = request["query"]
    tokens = counter(provider.profile.tokenizer).count(text)
    if tokens > request["max_query_tokens"]:
        return Refusal(
            f"the query is {tokens} tokens; role {role} may embed at most "
            f"{request['max_query_tokens']} per query "
            f"(syncsvc grant search {role} --max-query-tokens N)"
        )
    digest = search.query_hash(search.query_instruct(provider, generation), text)
    cur = await conn.execute(
        sqlfiles.query("search", "cache_peek"),
        {"generation_id": generation.id, "query_hash": digest},
    )
    if await cur.fetchone() is not None:
        return False
    per_minute = int(request["max_queries_per_minute"])
    async with conn.transaction():
        await conn.execute(sqlfiles.query("search", "lock_query_budget"), request)
        cur = await conn.execute(sqlfiles.query("search", "query_budget_used"), request)
        used = await cur.fetchone()
        assert used is not None
        if used["used"] >= per_minute:
            return Refusal(
                f"role {role} has used its {per_minute} query embeddings per minute; try "
                f"again in {max(1, round(used['retry_seconds']))} s (or raise the limit: "
                f"syncsvc grant search {role} --max-queries-per-minute N)"
            )
        await conn.execute(sqlfiles.query("search", "query_billed"), request)
    return True


async def prune(pool: AsyncConnectionPool[AsyncConn], text_retention_seconds: float) -> int:
    """Erase answered queries' text after the retention, and drop old request rows."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            sqlfiles.query("search", "prune_query_requests"),
            {"text_seconds": text_retention_seconds},
        )
        row = await cur.fetchone()
    return int(row["pruned"]) if row else 0
