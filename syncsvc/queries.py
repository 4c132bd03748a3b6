"""Text queries asked for from SQL (``CALL syncsvc.embed_query``), embedded by the daemon.

The request table is the truth and ``syncsvc_queries`` only wakes: the daemon also looks for
pending requests on its lease loop. Each query is embedded by ``search.embed_query``, the same
code the Python client and the CLI use, so it lands in ``syncsvc.query_cache`` under the same
key, and a later search by the same text costs no API call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from psycopg_pool import AsyncConnectionPool

from syncsvc import search, sqlfiles
from syncsvc.catalog import load_targets
from syncsvc.database import AsyncConn
from syncsvc.embedder import ProviderPaused
from syncsvc.errors import SyncsvcError
from syncsvc.providers.base import EmbeddingProvider

logger = logging.getLogger(__name__)

QUERIES_CHANNEL = "syncsvc_queries"


async def embed_pending(
    pool: AsyncConnectionPool[AsyncConn],
    provider_for: Callable[[str], EmbeddingProvider],
    limit: int = 50,
) -> int:
    """Embed up to ``limit`` pending query requests; returns how many were answered."""
    async with pool.connection() as conn:
        cur = await conn.execute(sqlfiles.query("search", "pending_queries"), {"limit": limit})
        pending = await cur.fetchall()
        if not pending:
            return 0
        generations = {g.id: (t, g) for t in await load_targets(conn) for g in t.generations}
    answered = 0
    for request in pending:
        found = generations.get(request["generation_id"])
        if found is None:
            continue
        target, generation = found
        async with pool.connection() as conn:
            try:
                provider = provider_for(generation.provider)
                await search.embed_query(conn, provider, target, request["query"], generation)
                digest = search.query_hash(
                    search.query_instruct(provider, generation), request["query"]
                )
                await conn.execute(
                    sqlfiles.query("search", "query_done"),
                    {**request, "query_hash": digest},
                )
            except (SyncsvcError, ProviderPaused) as exc:
                logger.warning("query for %s could not be embedded: %s", target.name, exc)
                await conn.execute(
                    sqlfiles.query("search", "query_failed"), {**request, "error": str(exc)}
                )
        answered += 1
    return answered
