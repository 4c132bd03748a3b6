"""Similarity search: query vectors (embedded once per generation, cached) and the search itself.

The nearest-neighbour SQL lives in the database (``syncsvc.search_by_vector``, migration 0002),
so psql users, the Python API and the CLI all run the same statement. This module adds what
needs Python: embedding the query text with the generation's own provider and parameters, the
query-vector cache, filters given as SQL, joining the source rows, and hybrid fusion by
reciprocal rank: dense + sparse when the generation stores DashScope sparse vectors, otherwise
dense + PostgreSQL full-text search.

A query vector carries the generation it was made for; it is only ever compared with that
generation's vectors, so a model or dimension change can never mix vector spaces.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from pgvector import SparseVector, Vector
from psycopg import sql

from syncsvc.core.errors import SyncsvcError, ValidationError
from syncsvc.core.models import HASH_SEPARATOR, Generation, Target, TextType
from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting, sqlfiles, statements
from syncsvc.embed.embedder import Embedder
from syncsvc.embed.items import Embedded, EmbedInput, EmbedSpec
from syncsvc.embed.provider import EmbeddingProvider
from syncsvc.search import ranking
from syncsvc.store.vectors import sparse_vector

RRF_K = 60
"""Reciprocal-rank-fusion constant (Cormack et al.): score = sum 1 / (RRF_K + rank)."""
HYBRID_POOL = 50
"""Candidates taken from each ranking before fusion (at least ``k``)."""
Params = Sequence[Any] | Mapping[str, Any] | None


class SearchError(SyncsvcError):
    """A search cannot be answered as asked (no active generation, foreign query vector...)."""


@dataclass(frozen=True)
class QueryVector:
    """A query embedded in one generation's space."""

    generation_id: int
    generation_key: str
    vector: tuple[float, ...]
    cached: bool
    """True when served from ``syncsvc.query_cache`` (no provider call)."""
    tokens: int | None = None
    sparse: dict[int, float] | None = None
    """The query's sparse vector ``{token id: weight}``, for generations that store them."""

    @property
    def dimensions(self) -> int:
        return len(self.vector)

    def to_numpy(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The vector as a float32 array, as SQLAlchemy's and psycopg's pgvector types take it."""
        return np.asarray(self.vector, dtype=np.float32)


@dataclass(frozen=True)
class SearchHit:
    """One result row."""

    pk: dict[str, Any]
    """The row's key as ``{column: value}``."""
    distance: float | None
    """Distance in the target's metric (cosine distance, negative inner product, or L2).
    None only for hybrid hits found by full-text search alone."""
    row: dict[str, Any]
    """The source row, all columns."""
    score: float | None = None
    """Reciprocal-rank-fusion score of hybrid searches (higher is better)."""


def query_instruct(provider: EmbeddingProvider, generation: Generation) -> str | None:
    """The instruction a generation's queries are embedded with.

    A generation may name one in its options (``instruct``); otherwise the model profile's
    default applies (Qwen3-Embedding hosts), and DashScope models get none unless configured.
    """
    configured = generation.options.get("instruct")
    if configured:
        return str(configured)
    try:
        return provider.profile.model(generation.model).default_instruct
    except ValidationError:
        return None


def query_hash(instruct: str | None, text: str) -> bytes:
    """Cache key of a query within a generation: sha256 over instruction and text."""
    return hashlib.sha256(f"{instruct or ''}{HASH_SEPARATOR}{text}".encode()).digest()


def active_generation(target: Target) -> Generation:
    generation = target.active
    if generation is None:
        raise SearchError(f"target {target.name!r} has no active generation to search")
    return generation


async def embed_query(
    conn: AsyncConn,
    provider: EmbeddingProvider,
    target: Target,
    text: str,
    generation: Generation | None = None,
) -> QueryVector:
    """The query vector of ``text`` in ``generation`` (default: the active one).

    Served from ``syncsvc.query_cache`` when this generation has embedded the same text with the
    same instruction before; otherwise embedded with ``text_type=query`` and cached. On a
    read-only connection (a hot standby) the cache is only read: no hit count, no new entry.
    """
    generation = generation or active_generation(target)
    if provider.name != generation.provider:
        raise SearchError(
            f"generation {generation.id} of {target.name!r} embeds with provider "
            f"{generation.provider!r}, not {provider.name!r}"
        )
    if not text.strip():
        raise ValidationError("the search text is empty")
    instruct = query_instruct(provider, generation)
    digest = query_hash(instruct, text)
    key = {"generation_id": generation.id, "query_hash": digest}
    read_only = _read_only(conn) or not await _may_write_cache(conn)
    get, sparse_get = (
        ("cache_peek", "sparse_cache_peek") if read_only else ("cache_get", "sparse_cache_get")
    )
    cur = await conn.execute(sqlfiles.query("search", get), key)
    row = await cur.fetchone()
    cached_sparse: dict[int, float] | None = None
    if row is not None and generation.sparse:
        sparse_cur = await conn.execute(sqlfiles.query("search", sparse_get), key)
        sparse_row = await sparse_cur.fetchone()
        if sparse_row is not None:
            stored: SparseVector = sparse_row["sparse"]
            cached_sparse = dict(zip(stored.indices(), stored.values(), strict=True))
    if (
        row is not None
        and len(row["embedding"].to_list()) == generation.dimensions
        and (cached_sparse is not None or not generation.sparse)
    ):
        return QueryVector(
            generation.id,
            generation.key,
            tuple(row["embedding"].to_list()),
            True,
            row["tokens"],
            cached_sparse,
        )
    spec = EmbedSpec(
        model=generation.model,
        dimensions=generation.dimensions,
        text_type=TextType.QUERY,
        instruct=instruct,
        sparse=generation.sparse,
    )
    outcome = (await Embedder(provider, spec).embed([EmbedInput("query", text)]))["query"]
    if not isinstance(outcome, Embedded):
        raise SearchError(f"could not embed the query: {outcome.message}")
    # An overlong query is truncated by default; under the 'chunk' policy its first piece leads.
    vector = outcome.vectors[0]
    sparse = outcome.sparse[0] if outcome.sparse else None
    if read_only:
        return QueryVector(
            generation.id, generation.key, tuple(vector), False, outcome.tokens, sparse
        )
    await conn.execute(
        sqlfiles.query("search", "cache_put"),
        {**key, "embedding": Vector(list(vector)), "tokens": outcome.tokens},
    )
    if sparse is not None:
        await conn.execute(
            sqlfiles.query("search", "sparse_cache_put"),
            {**key, "sparse": sparse_vector(sparse)},
        )
    return QueryVector(generation.id, generation.key, tuple(vector), False, outcome.tokens, sparse)


def check_query(target: Target, query: QueryVector, generation: Generation | None = None) -> int:
    """The generation id to search with ``query``; refuses any other vector space."""
    generation = generation or active_generation(target)
    if query.generation_id != generation.id or query.generation_key != generation.key:
        raise SearchError(
            f"the query vector was embedded for generation {query.generation_id} "
            f"(key {query.generation_key}) but target {target.name!r} searches generation "
            f"{generation.id} (key {generation.key}); embed the query again"
        )
    if query.dimensions != generation.dimensions:
        raise SearchError(
            f"query vector has {query.dimensions} dims; generation {generation.id} has "
            f"{generation.dimensions}"
        )
    return generation.id


def render_where(conn: AsyncConn, where: str | None, params: Params = None) -> str | None:
    """A filter as literal SQL, with ``params`` bound client-side (``%s`` / ``%(name)s``).

    ``where`` is SQL: pass user input through ``params``, never by formatting it in. Without
    ``params`` it is used as written (a ``%`` is just a ``%``).
    """
    if where is None or not where.strip():
        return None
    if params is None:
        return where
    try:
        return psycopg.AsyncClientCursor(conn).mogrify(where, params)
    except (psycopg.ProgrammingError, psycopg.DataError, KeyError, TypeError) as exc:
        # With params the filter's own % are placeholders: a literal one is written %%.
        raise ValidationError(
            f"invalid filter {where!r} with params ({exc}); write %% for a literal %"
        ) from None


async def search_vector(
    conn: AsyncConn,
    target: Target,
    query: QueryVector,
    *,
    k: int = 10,
    where: str | None = None,
    params: Params = None,
    hybrid_text: str | None = None,
) -> list[SearchHit]:
    """The ``k`` source rows nearest to ``query`` in the target's active generation.

    ``where`` is a SQL boolean expression over the source row (alias ``s``). With
    ``hybrid_text``, dense results are fused with the sparse ranking of ``query.sparse`` when the
    generation stores sparse vectors, otherwise with full-text matches of that text.
    """
    if not 1 <= k <= 10_000:
        raise ValidationError(f"k must be between 1 and 10000, not {k}")
    generation_id = check_query(target, query)
    filter_sql = render_where(conn, where, params)
    values: dict[str, Any] = {
        "target": target.name,
        "query": Vector(list(query.vector)),
        "k": k,
        "filter": filter_sql,
        "generation": generation_id,
    }
    generation = active_generation(target)
    if hybrid_text is None:
        statement = ranking.dense_statement(target)
    elif generation.sparse:
        if query.sparse is None:
            raise SearchError(
                f"generation {generation.id} of {target.name!r} stores sparse vectors but the "
                "query vector has none; embed the query with this generation"
            )
        statement = ranking.sparse_hybrid_statement(target, generation, filter_sql)
        values.update(pool=max(k, HYBRID_POOL), sparse=sparse_vector(query.sparse), rrf_k=RRF_K)
    else:
        statement = ranking.hybrid_statement(target, filter_sql)
        values.update(pool=max(k, HYBRID_POOL), text=hybrid_text, rrf_k=RRF_K)
    try:
        cur = await conn.execute(statement, values)
    except psycopg.errors.SyntaxError as exc:
        raise ValidationError(f"invalid filter {where!r}: {exc}") from exc
    except psycopg.errors.UndefinedColumn as exc:
        raise ValidationError(f"invalid filter {where!r}: {exc}") from exc
    hits = []
    for row in await cur.fetchall():
        pk = row.pop(ranking.PK_COLUMN)
        distance = row.pop(ranking.DISTANCE_COLUMN)
        score = row.pop(ranking.SCORE_COLUMN)
        hits.append(SearchHit(pk=dict(pk), distance=distance, row=row, score=score))
    return hits


async def similar_rows(
    conn: AsyncConn,
    target: Target,
    pk: Any,
    *,
    k: int = 10,
    where: str | None = None,
    params: Params = None,
) -> list[SearchHit]:
    """Rows most like the stored row ``pk`` (a value, a list, or ``{column: value}``)."""
    from psycopg.types.json import Jsonb

    generation = active_generation(target)
    statement = sql.SQL(
        """SELECT h.pk AS {pk}, h.distance AS {distance}, NULL::float8 AS {score}, s.*
           FROM syncsvc.similar_rows(%(target)s, %(key)s, %(k)s, %(filter)s, %(generation)s) h
           JOIN {source} s ON {match}
           ORDER BY h.distance, h.pk"""
    ).format(
        pk=quoting.ident(ranking.PK_COLUMN),
        distance=quoting.ident(ranking.DISTANCE_COLUMN),
        score=quoting.ident(ranking.SCORE_COLUMN),
        source=statements.source(target),
        match=ranking.key_match(target, "s", "h"),
    )
    cur = await conn.execute(
        statement,
        {
            "target": target.name,
            "key": Jsonb(pk),
            "k": k,
            "filter": render_where(conn, where, params),
            "generation": generation.id,
        },
    )
    hits = []
    for row in await cur.fetchall():
        key = row.pop(ranking.PK_COLUMN)
        distance = row.pop(ranking.DISTANCE_COLUMN)
        row.pop(ranking.SCORE_COLUMN)
        hits.append(SearchHit(pk=dict(key), distance=distance, row=row))
    return hits


async def prune_cache(conn: AsyncConn, older_than_seconds: float) -> int:
    """Forget cached query vectors unused for ``older_than_seconds``; returns how many."""
    cur = await conn.execute(
        sqlfiles.query("search", "cache_prune"), {"seconds": older_than_seconds}
    )
    await conn.execute(
        sqlfiles.query("search", "sparse_cache_prune"), {"seconds": older_than_seconds}
    )
    return cur.rowcount


async def cache_stats(conn: AsyncConn) -> list[dict[str, Any]]:
    """Per generation: cached query vectors, their hits and when one was last used."""
    cur = await conn.execute(sqlfiles.query("search", "cache_stats"))
    return list(await cur.fetchall())


_cache_writers: weakref.WeakKeyDictionary[AsyncConn, bool] = weakref.WeakKeyDictionary()


async def _may_write_cache(conn: AsyncConn) -> bool:
    """Whether this session's role may add to the query cache (asked once per connection).

    A role given only ``syncsvc grant search`` reads the cache: cache rows come from syncsvc's
    own role, so no searcher can plant a vector for somebody else's query.
    """
    allowed = _cache_writers.get(conn)
    if allowed is None:
        cur = await conn.execute(sqlfiles.query("privileges", "can_write_cache"))
        row = await cur.fetchone()
        allowed = bool(row and row["ok"])
        _cache_writers[conn] = allowed
    return allowed


def _read_only(conn: AsyncConn) -> bool:
    """Whether this session cannot write: a hot standby or a read-only default. The server
    reports both settings to the client (PostgreSQL 14+), so asking costs no round trip."""
    status = conn.info.parameter_status
    return bool(conn.read_only) or any(
        status(name) == "on" for name in ("in_hot_standby", "default_transaction_read_only")
    )
