"""The Python API: administer targets and search their rows by meaning from any application.

``AsyncClient`` for asyncio code; ``Client`` (``syncsvc.api.sync``) offers the same methods
synchronously (it runs an event loop of its own in a background thread, so it also works
inside other frameworks)::

    from syncsvc import Client

    with Client("postgresql://owner@db/app") as client:
        client.add_target("articles", "public.articles", ["title", "body"],
                          provider="dashscope", model="text-embedding-v4", dimensions=1024)
        for hit in client.search("articles", "how do I reset my password", k=5,
                                 where="s.published AND s.lang = %s", params=["en"]):
            print(hit.distance, hit.row["title"])

Every method runs the same function as the matching CLI command and SQL function (see
docs/python.md), so the three leave identical catalog state. Searching needs only a role
granted ``syncsvc grant search``; administration needs the owner role.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from syncsvc import jobs
from syncsvc.capture import drift, targets
from syncsvc.core.models import Capture, Metric, Target
from syncsvc.core.settings import Settings
from syncsvc.core.types import AsyncConn
from syncsvc.db import privileges
from syncsvc.db.catalog import get_target, load_targets
from syncsvc.db.database import create_pool, ensure_pgvector, resolve_url
from syncsvc.embed.chunking import Chunking
from syncsvc.embed.provider import EmbeddingProvider, ProviderFactory
from syncsvc.jobs.model import Estimate, Job
from syncsvc.observe import status
from syncsvc.observe.status import TargetStatus
from syncsvc.providers.registry import build_provider
from syncsvc.queue import failures
from syncsvc.queue.failures import FailedRow
from syncsvc.search import engine as _search
from syncsvc.search.engine import Params, QueryVector, SearchHit
from syncsvc.store import promote
from syncsvc.store.promote import GenerationCoverage, Promotion

T = TypeVar("T")


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

    async def _call(self, action: Callable[[AsyncConn], Awaitable[T]]) -> T:
        pool = await self._connection_pool()
        async with pool.connection() as conn:
            return await action(conn)

    # --- targets ---------------------------------------------------------------------------

    async def add_target(
        self,
        name: str,
        table: str,
        columns: Sequence[str],
        *,
        provider: str,
        model: str,
        dimensions: int | None = None,
        template: str | None = None,
        pk: Sequence[str] | None = None,
        metric: Metric | str = Metric.COSINE,
        embed_labels: bool = False,
        sparse: bool = False,
        chunk_tokens: int | None = None,
        chunk_overlap: int = 0,
        chunk_markdown: bool = False,
        capture: Capture | str = Capture.TRIGGERS,
    ) -> Target:
        """Register ``table`` ([schema.]table): validate, create its first generation, vector
        table and view, install its capture (``syncsvc target add``): statement triggers, or
        ``capture="wal"`` logical decoding. With ``chunk_tokens`` each row is embedded as
        chunks of at most that many tokens."""
        options: dict[str, Any] = {"sparse": True} if sparse else {}
        if chunk_tokens is not None:
            options["chunking"] = Chunking(chunk_tokens, chunk_overlap, chunk_markdown).as_option()
        spec = targets.TargetSpec(
            name=name,
            table=table,
            columns=tuple(columns),
            model=model,
            dimensions=dimensions,
            provider=provider,
            template=template,
            pk=tuple(pk) if pk else None,
            metric=Metric(metric),
            options=options,
            embed_labels=embed_labels,
            capture=Capture(capture),
        )
        return await self._call(lambda conn: targets.add_target(conn, self.settings, spec))

    async def remove_target(self, name: str, *, keep_vectors: bool = False) -> Target:
        """Drop a target's triggers and catalog rows (and its vector tables unless kept)."""
        return await self._call(
            lambda conn: targets.remove_target(conn, name, keep_vectors=keep_vectors)
        )

    async def targets(self) -> list[Target]:
        """Every target with its generations, in name order."""
        return await self._call(load_targets)

    async def target(self, name: str) -> Target:
        """One target with its generations (``NotFoundError`` if there is none)."""
        return await self._call(lambda conn: get_target(conn, name))

    async def pause_target(self, name: str, reason: str = "paused by an operator") -> None:
        """Stop embedding a target; its changes keep being captured."""
        await self._call(lambda conn: drift.pause(conn, name, reason))

    async def resume_target(self, name: str) -> str | None:
        """Embed a paused target again; returns the reason it had been paused for."""
        return await self._call(lambda conn: drift.resume(conn, name))

    async def status(self) -> list[TargetStatus]:
        """Per target: rows, embedded, pending, in flight, failed, lag, generation, pause."""
        return await self._call(status.collect)

    # --- who may search --------------------------------------------------------------------

    async def grant_search(
        self,
        role: str,
        target: str | None = None,
        *,
        max_queries_per_minute: int = privileges.DEFAULT_MAX_QUERIES_PER_MINUTE,
        max_query_tokens: int = privileges.DEFAULT_MAX_QUERY_TOKENS,
    ) -> int:
        """Let ``role`` search ``target`` (or every target) within per-role limits on the query
        embeddings the daemon makes for it; returns the vector tables granted."""
        return await self._call(
            lambda conn: privileges.grant_search(
                conn,
                role,
                target,
                max_queries_per_minute=max_queries_per_minute,
                max_query_tokens=max_query_tokens,
            )
        )

    async def revoke_search(self, role: str, target: str | None = None) -> None:
        """Take back what :meth:`grant_search` gave (for one target, or all)."""
        await self._call(lambda conn: privileges.revoke_search(conn, role, target))

    async def search_grants(self) -> list[privileges.SearchGrant]:
        """Roles that may search, which targets, and their limits."""
        return await self._call(privileges.search_grants)

    # --- failures --------------------------------------------------------------------------

    async def failed(self, target: str | None = None, limit: int = 100) -> list[FailedRow]:
        """Rows that failed to embed, oldest failure first."""
        return await self._call(lambda conn: failures.list_failed(conn, target, limit))

    async def retry_failed(self, target: str | None = None) -> int:
        """Queue failed rows again with fresh attempts; returns how many."""
        return await self._call(lambda conn: failures.retry_failed(conn, target))

    async def retry_failed_and_wait(
        self, target: str | None = None, *, wait_seconds: float = 30.0
    ) -> failures.RetryOutcome:
        """Retry failed rows, wait (bounded) for a daemon to settle them, and say how many were
        embedded and how many failed again, with the API's message (``failed retry``)."""
        return await self._call(
            lambda conn: failures.retry_and_wait(conn, target, wait_seconds=wait_seconds)
        )

    # --- generations and jobs --------------------------------------------------------------

    async def estimate_reembed(
        self, target: str, model: str, dimensions: int, *, provider: str | None = None
    ) -> Estimate:
        """Rows, tokens and cost of a re-embed, computed without calling any API."""
        return await self._call(
            lambda conn: jobs.estimate(
                conn, self.settings, target, model=model, dimensions=dimensions, provider=provider
            )
        )

    async def reembed(
        self,
        target: str,
        model: str,
        dimensions: int,
        *,
        provider: str | None = None,
        auto_promote: bool = False,
        max_queued: int | None = None,
    ) -> Job:
        """Start building a new generation beside the active one; a daemon carries it out."""
        return await self._call(
            lambda conn: jobs.request_reembed(
                conn,
                self.settings,
                target,
                model=model,
                dimensions=dimensions,
                provider=provider,
                auto_promote=auto_promote,
                max_queued=max_queued,
            )
        )

    async def jobs(self, *, open_only: bool = False) -> list[Job]:
        """Re-embedding jobs with their progress, in id order."""
        return await self._call(lambda conn: jobs.list_jobs(conn, open_only=open_only))

    async def job(self, job_id: int) -> Job:
        return await self._call(lambda conn: jobs.get_job(conn, job_id))

    async def generations(self, target: str) -> list[GenerationCoverage]:
        """Every generation of a target with how much of the source it covers."""
        return await self._call(lambda conn: promote.generation_coverage(conn, target))

    async def promote(
        self,
        target: str,
        generation: int,
        *,
        force: bool = False,
        accept_failed: bool = False,
        dry_run: bool = False,
    ) -> Promotion:
        """Atomically switch the target's search to ``generation``: refused unless every row
        has a current vector there (see ``promote.refusal``; ``accept_failed`` accepts rows
        failed for good, ``force`` anything). ``dry_run`` checks and measures only."""
        return await self._call(
            lambda conn: promote.promote(
                conn,
                target,
                generation,
                force=force,
                accept_failed=accept_failed,
                max_failed=self.settings.jobs.promote_max_failed,
                dry_run=dry_run,
            )
        )

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
