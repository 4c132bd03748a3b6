"""The Python API: search a target's rows by meaning from any application.

``AsyncClient`` for asyncio code; ``Client`` offers the same methods synchronously (it runs an
event loop of its own in a background thread, so it also works inside other frameworks)::

    from syncsvc import Client

    with Client("postgresql://localhost/app") as client:
        for hit in client.search("articles", "how do I reset my password", k=5,
                                 where="s.published AND s.lang = %s", params=["en"]):
            print(hit.distance, hit.row["title"])
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from syncsvc import search as _search
from syncsvc.catalog import get_target
from syncsvc.database import AsyncConn, create_pool, ensure_pgvector, resolve_url
from syncsvc.providers.base import EmbeddingProvider
from syncsvc.providers.registry import build_provider
from syncsvc.search import Params, QueryVector, SearchHit
from syncsvc.settings import Settings

T = TypeVar("T")
ProviderFactory = Callable[[str], EmbeddingProvider]


class AsyncClient:
    """Search targets from asyncio code. Close it (or use ``async with``) when done."""

    def __init__(
        self,
        database_url: str | None = None,
        settings: Settings | None = None,
        *,
        provider_factory: ProviderFactory | None = None,
        max_connections: int = 4,
    ) -> None:
        self.settings = settings or Settings()
        self._url = database_url
        self._factory = provider_factory or (lambda name: build_provider(name, self.settings))
        self._providers: dict[str, EmbeddingProvider] = {}
        self._max_connections = max_connections
        self._pool: AsyncConnectionPool[AsyncConn] | None = None
        self._lock = asyncio.Lock()

    async def _connection_pool(self) -> AsyncConnectionPool[AsyncConn]:
        async with self._lock:
            if self._pool is None:
                url = self._url if self._url is not None else resolve_url(self.settings)
                pool = create_pool(url, min_size=1, max_size=self._max_connections)
                await pool.open(wait=True)
                async with pool.connection() as conn:
                    await ensure_pgvector(conn)
                self._pool = pool
            return self._pool

    def provider(self, name: str) -> EmbeddingProvider:
        """The provider a generation names; built once and reused (its pool, its budget)."""
        if name not in self._providers:
            self._providers[name] = self._factory(name)
        return self._providers[name]

    async def embed_query(self, target: str, text: str) -> QueryVector:
        """The query vector of ``text`` in the target's active generation (cached)."""
        pool = await self._connection_pool()
        async with pool.connection() as conn:
            found = await get_target(conn, target)
            generation = _search.active_generation(found)
            return await _search.embed_query(
                conn, self.provider(generation.provider), found, text, generation
            )

    async def search(
        self,
        target: str,
        text: str,
        k: int = 10,
        where: str | None = None,
        hybrid: bool = False,
        *,
        params: Params = None,
    ) -> list[SearchHit]:
        """The ``k`` rows of ``target`` nearest in meaning to ``text``, nearest first.

        ``where`` is a SQL boolean expression over the source row (alias ``s``), with values
        bound from ``params``. ``hybrid`` fuses the dense ranking by reciprocal rank with the
        sparse one (generations storing DashScope sparse vectors) or else with full-text matches.
        The query is embedded once per generation and then served from the database cache.
        """
        pool = await self._connection_pool()
        async with pool.connection() as conn:
            found = await get_target(conn, target)
            generation = _search.active_generation(found)
            query = await _search.embed_query(
                conn, self.provider(generation.provider), found, text, generation
            )
            return await _search.search_vector(
                conn,
                found,
                query,
                k=k,
                where=where,
                params=params,
                hybrid_text=text if hybrid else None,
            )

    async def search_vector(
        self,
        target: str,
        query: QueryVector,
        k: int = 10,
        where: str | None = None,
        *,
        params: Params = None,
    ) -> list[SearchHit]:
        """Search with a query vector from ``embed_query``; refused if the generation changed."""
        pool = await self._connection_pool()
        async with pool.connection() as conn:
            found = await get_target(conn, target)
            return await _search.search_vector(conn, found, query, k=k, where=where, params=params)

    async def similar(
        self,
        target: str,
        pk: Any,
        k: int = 10,
        where: str | None = None,
        *,
        params: Params = None,
    ) -> list[SearchHit]:
        """Rows most like the stored row ``pk`` (more like this; no API call)."""
        pool = await self._connection_pool()
        async with pool.connection() as conn:
            found = await get_target(conn, target)
            return await _search.similar_rows(conn, found, pk, k=k, where=where, params=params)

    async def close(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Client:
    """Synchronous face of ``AsyncClient``: same arguments, same results."""

    def __init__(
        self,
        database_url: str | None = None,
        settings: Settings | None = None,
        *,
        provider_factory: ProviderFactory | None = None,
        max_connections: int = 4,
    ) -> None:
        # A private loop in a daemon thread: callers may be plain scripts or already run a loop.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="syncsvc-client", daemon=True
        )
        self._thread.start()
        self._async = self._run(
            _make_async(database_url, settings, provider_factory, max_connections)
        )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def search(
        self,
        target: str,
        text: str,
        k: int = 10,
        where: str | None = None,
        hybrid: bool = False,
        *,
        params: Params = None,
    ) -> list[SearchHit]:
        """See ``AsyncClient.search``."""
        return self._run(self._async.search(target, text, k, where, hybrid, params=params))

    def embed_query(self, target: str, text: str) -> QueryVector:
        """See ``AsyncClient.embed_query``."""
        return self._run(self._async.embed_query(target, text))

    def search_vector(
        self,
        target: str,
        query: QueryVector,
        k: int = 10,
        where: str | None = None,
        *,
        params: Params = None,
    ) -> list[SearchHit]:
        """See ``AsyncClient.search_vector``."""
        return self._run(self._async.search_vector(target, query, k, where, params=params))

    def similar(
        self,
        target: str,
        pk: Any,
        k: int = 10,
        where: str | None = None,
        *,
        params: Params = None,
    ) -> list[SearchHit]:
        """See ``AsyncClient.similar``."""
        return self._run(self._async.similar(target, pk, k, where, params=params))

    def provider(self, name: str) -> EmbeddingProvider:
        return self._async.provider(name)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _make_async(
    database_url: str | None,
    settings: Settings | None,
    provider_factory: ProviderFactory | None,
    max_connections: int,
) -> AsyncClient:
    # Created on the client's own loop, so its lock and pool belong to that loop.
    return AsyncClient(
        database_url,
        settings,
        provider_factory=provider_factory,
        max_connections=max_connections,
    )
