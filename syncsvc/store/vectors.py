"""Reading embedding inputs and writing vectors, guarded by the content hash.

A vector is only ever written if the source row *still* renders to the text that was embedded:
the guard is in the same SQL statement as the write, so a slow, stale result can never
overwrite the vector of a newer edit.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pgvector import SparseVector, Vector
from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.core.models import SPARSE_DIMENSIONS, Generation, PkValue, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting, statements

"""Dimension of stored sparse vectors (``sparsevec(1000000)``, migration 0005): it bounds the
token ids DashScope returns (Qwen vocabulary, ~152k) and the simulator's (250k)."""


_YIELD_EVERY = 32
_RENDERED: dict[tuple[object, ...], bytes] = {}
_RENDERED_LIMIT = 256


def _rendered(
    conn: AsyncConn,
    target: Target,
    generations: Sequence[Generation],
    what: str,
    build: Callable[[], sql.Composable],
) -> bytes:
    """A per-target statement, composed and quoted once per shape rather than every round
    (composing cost about a millisecond of the event loop); stable bytes also let psycopg
    prepare it."""
    key = (
        what,
        target.id,
        target.source_schema,
        target.source_table,
        target.pk_columns,
        target.pk_types,
        target.columns,
        target.template,
        tuple((g.id, g.key, g.table_name, g.sparse) for g in generations),
    )
    query = _RENDERED.get(key)
    if query is None:
        if len(_RENDERED) >= _RENDERED_LIMIT:
            _RENDERED.clear()
        query = _RENDERED[key] = build().as_bytes(conn)
    return query


class PackedVector(Vector):
    """A vector packed straight into pgvector's binary form (big-endian float4 after a
    dimension header). Packing the provider's floats with one ``struct.pack`` costs a third
    of building an array first, and a round packs hundreds of them on the event loop."""

    def __init__(self, values: Sequence[float]) -> None:
        # Deliberately not Vector.__init__: only the binary form is ever used.
        self._binary = struct.pack(f">HH{len(values)}f", len(values), 0, *values)

    def to_binary(self) -> bytes:
        return self._binary

    def __repr__(self) -> str:
        return f"PackedVector({(len(self._binary) - 4) // 4} dims)"


@dataclass(frozen=True)
class RowState:
    """What a queue entry's row looks like now."""

    pk: PkValue
    input: str | None
    """The exact embedding input, or None when the row is gone or has no text."""
    stored_hashes: dict[int, bytes | None]
    """generation id → content hash of the stored vector (None: no vector)."""


@dataclass(frozen=True)
class VectorWrite:
    pk: PkValue
    content_hash: bytes
    vectors: tuple[tuple[float, ...], ...]
    tokens: int
    truncated: bool
    sparse: tuple[dict[int, float], ...] | None = None
    """One sparse vector per chunk, for generations that store them."""
    chunk_tokens: tuple[int, ...] = ()
    """Tokens per chunk; empty: the whole row's ``tokens`` on its one chunk."""
    spans: tuple[tuple[int, int], ...] = ()
    """Character offsets of each chunk (chunked generations)."""
    chunk_hashes: tuple[bytes, ...] = ()
    """Digest of each chunk's text (chunked generations)."""


def sparse_vector(values: dict[int, float]) -> SparseVector:
    """A provider's ``{token id: weight}`` as a pgvector sparse vector of the stored dimension."""
    if any(not 0 <= index < SPARSE_DIMENSIONS for index in values):
        raise ValueError(f"sparse index outside 0..{SPARSE_DIMENSIONS - 1}")
    return SparseVector(values, SPARSE_DIMENSIONS)


async def read_rows(
    conn: AsyncConn, target: Target, generations: Sequence[Generation], pks: Sequence[PkValue]
) -> list[RowState]:
    """Current input text and stored hashes of the given rows, in one query."""
    query = _rendered(
        conn, target, generations, "read", lambda: _read_statement(target, generations)
    )
    cur = await conn.execute(query, {"pks": [Jsonb(pk) for pk in pks]})
    states = []
    for row in await cur.fetchall():
        states.append(
            RowState(
                pk=row["pk"],
                input=row["input"],
                stored_hashes={g.id: row[f"h{g.id}"] for g in generations},
            )
        )
    return states


def _read_statement(target: Target, generations: Sequence[Generation]) -> sql.Composed:
    joins = sql.SQL(" ").join(
        sql.SQL("LEFT JOIN {table} {alias} ON {match} AND {alias}.chunk = 0").format(
            table=statements.vector_table(g),
            alias=quoting.ident(f"g{g.id}"),
            match=statements.pk_matches_json(target, f"g{g.id}", sql.SQL("d.pk")),
        )
        for g in generations
    )
    hashes = sql.SQL("").join(
        sql.SQL(", {}.content_hash AS {}").format(
            quoting.ident(f"g{g.id}"), quoting.ident(f"h{g.id}")
        )
        for g in generations
    )
    return sql.SQL(
        # A row with nothing to embed reads like a deleted one: its vector goes.
        """SELECT d.pk, CASE WHEN s.{first} IS NULL OR NOT {has_text} THEN NULL ELSE {input} END
                  AS input{hashes}
           FROM unnest(%(pks)s::jsonb[]) AS d(pk)
           LEFT JOIN {source} s ON {match}
           {joins}"""
    ).format(
        first=quoting.ident(target.pk_columns[0]),
        has_text=statements.has_text(target, "s"),
        input=statements.input_expr(target, "s"),
        hashes=hashes,
        source=statements.source(target),
        match=statements.pk_matches_json(target, "s", sql.SQL("d.pk")),
        joins=joins,
    )


def _write_statement(target: Target, generation: Generation) -> sql.Composed:
    """One set-based, guarded upsert for a whole batch (one input row per chunk).

    Vectors travel in binary: pgvector's text format costs ~2 ms per 1,024-dim vector to build.
    A generation storing sparse vectors also writes its ``sparse`` column (NULL when absent).

    ``fresh`` keeps only rows whose current text still hashes to what was embedded; chunks
    beyond a row's new chunk count are removed so a shorter text leaves no stale chunks. A
    chunk already stored for the same hash is left alone (counted stale by the caller).
    """
    sparse = generation.sparse
    return sql.SQL(
        """WITH incoming AS (
               SELECT * FROM unnest(%(pks)s::jsonb[], %(chunks)s::integer[],
                                    %(vectors)b::vector[], %(hashes)s::bytea[],
                                    %(tokens)s::integer[], %(truncated)s::boolean[],
                                    %(starts)s::integer[], %(ends)s::integer[],
                                    %(chunk_hashes)s::bytea[]{sparse_in})
                   AS i(pk, chunk, embedding, content_hash, tokens, truncated, chunk_start,
                        chunk_end, chunk_hash{sparse_col})
           ), fresh AS (
               SELECT {pk_cols}, i.chunk, i.embedding, i.content_hash, i.tokens, i.truncated,
                      i.chunk_start, i.chunk_end, i.chunk_hash{sparse_sel}
               FROM incoming i JOIN {source} s ON {match}
               WHERE syncsvc.content_hash({key}, {input}) = i.content_hash
           ), purge AS (
               DELETE FROM {table} v
               USING (SELECT {pk_names}, max(chunk) AS last FROM fresh GROUP BY {pk_names}) f
               WHERE {v_match} AND v.chunk > f.last
           )
           INSERT INTO {table} AS v ({pk_names}, chunk, embedding, content_hash, tokens,
                                      truncated, embedded_at, chunk_start, chunk_end,
                                      chunk_hash{sparse_col})
           SELECT {pk_names}, chunk, embedding, content_hash, tokens, truncated, now(),
                  chunk_start, chunk_end, chunk_hash{sparse_col}
           FROM fresh
           ON CONFLICT ({pk_names}, chunk) DO UPDATE SET
               embedding = EXCLUDED.embedding,{sparse_set}
               content_hash = EXCLUDED.content_hash,
               tokens = EXCLUDED.tokens,
               truncated = EXCLUDED.truncated,
               embedded_at = EXCLUDED.embedded_at,
               chunk_start = EXCLUDED.chunk_start,
               chunk_end = EXCLUDED.chunk_end,
               chunk_hash = EXCLUDED.chunk_hash
           -- The same text's vector written already (a lapsed lease re-done elsewhere, a
           -- crash between write and complete): nothing to write, no row version churned.
           WHERE v.content_hash IS DISTINCT FROM EXCLUDED.content_hash
              OR v.chunk_hash IS DISTINCT FROM EXCLUDED.chunk_hash
           RETURNING v.chunk"""
    ).format(
        pk_cols=statements.pk_columns(target, "s"),
        source=statements.source(target),
        match=statements.pk_matches_json(target, "s", sql.SQL("i.pk")),
        key=quoting.literal(generation.key),
        input=statements.input_expr(target, "s"),
        table=statements.vector_table(generation),
        v_match=statements.pk_equals(target, "v", "f"),
        pk_names=sql.SQL(", ").join(quoting.ident(c) for c in target.pk_columns),
        sparse_in=sql.SQL(", %(sparse)b::sparsevec[]" if sparse else ""),
        sparse_col=sql.SQL(", sparse" if sparse else ""),
        sparse_sel=sql.SQL(", i.sparse" if sparse else ""),
        sparse_set=sql.SQL("\n               sparse = EXCLUDED.sparse," if sparse else ""),
    )


async def write_vectors(
    conn: AsyncConn, target: Target, generation: Generation, writes: Sequence[VectorWrite]
) -> int:
    """Guarded upserts in one statement; returns how many rows were written (stale: skipped)."""
    if not writes:
        return 0
    params: dict[str, list[object]] = {
        "pks": [],
        "chunks": [],
        "vectors": [],
        "hashes": [],
        "tokens": [],
        "truncated": [],
        "starts": [],
        "ends": [],
        "chunk_hashes": [],
    }
    if generation.sparse:
        params["sparse"] = []
    for number, write in enumerate(writes, 1):
        if number % _YIELD_EVERY == 0:
            # Converting a round's vectors takes ~10 ms: let replies that arrived meanwhile be
            # read (and their request slots reused) rather than wait for all of it.
            await asyncio.sleep(0)
        for chunk, vector in enumerate(write.vectors):
            if len(vector) != generation.dimensions:
                # Never let a vector of the wrong size into a generation's space.
                raise ValueError(
                    f"vector of {len(vector)} dims for generation {generation.id} "
                    f"({generation.dimensions} dims)"
                )
            params["pks"].append(Jsonb(write.pk))
            params["chunks"].append(chunk)
            params["vectors"].append(PackedVector(vector))
            params["hashes"].append(write.content_hash)
            params["tokens"].append(
                write.chunk_tokens[chunk] if write.chunk_tokens else write.tokens
            )
            params["truncated"].append(write.truncated)
            span = write.spans[chunk] if write.spans else None
            params["starts"].append(span[0] if span else None)
            params["ends"].append(span[1] if span else None)
            params["chunk_hashes"].append(write.chunk_hashes[chunk] if write.chunk_hashes else None)
            if generation.sparse:
                values = write.sparse[chunk] if write.sparse else None
                params["sparse"].append(None if values is None else sparse_vector(values))
    query = _rendered(
        conn, target, (generation,), "write", lambda: _write_statement(target, generation)
    )
    cur = await conn.execute(query, params)
    return sum(1 for row in await cur.fetchall() if row["chunk"] == 0)


async def delete_absent(
    conn: AsyncConn, target: Target, generations: Sequence[Generation], pks: Sequence[PkValue]
) -> None:
    """Remove vectors of rows that are gone or have no text any more (rechecked in SQL)."""
    for generation in generations:
        await conn.execute(
            sql.SQL(
                """DELETE FROM {table} v USING unnest(%(pks)s::jsonb[]) AS d(pk)
                   WHERE {v_match} AND NOT EXISTS (
                       SELECT 1 FROM {source} s
                       WHERE {s_match} AND {has_text})"""
            ).format(
                table=statements.vector_table(generation),
                v_match=statements.pk_matches_json(target, "v", sql.SQL("d.pk")),
                source=statements.source(target),
                s_match=statements.pk_equals(target, "s", "v"),
                has_text=statements.has_text(target, "s"),
            ),
            {"pks": [Jsonb(pk) for pk in pks]},
        )


async def stored_chunks(
    conn: AsyncConn, target: Target, generation: Generation, pks: Sequence[PkValue]
) -> dict[bytes, tuple[tuple[float, ...], int]]:
    """The stored chunks of these rows by digest: (vector, tokens). An edited document keeps
    the vectors of its unchanged chunks (chunked generations only)."""
    if not pks:
        return {}
    cur = await conn.execute(
        sql.SQL(
            "SELECT v.chunk_hash, v.embedding::real[] AS vector, v.tokens "
            "FROM {} v JOIN unnest(%(pks)s::jsonb[]) AS k(pk) ON {} "
            "WHERE v.chunk_hash IS NOT NULL"
        ).format(
            statements.vector_table(generation),
            statements.pk_matches_json(target, "v", sql.SQL("k.pk")),
        ),
        {"pks": [Jsonb(pk) for pk in pks]},
    )
    return {
        bytes(r["chunk_hash"]): (tuple(r["vector"]), int(r["tokens"] or 0))
        for r in await cur.fetchall()
    }
