"""The SQL that ranks rows for a search: dense, dense fused with full text, dense fused with
sparse. Pure statement builders; ``syncsvc.search.engine`` runs them."""

from __future__ import annotations

from psycopg import sql

from syncsvc.core.models import Generation, Target
from syncsvc.db import quoting, statements

# Result columns added to the source row's own; prefixed so they cannot clash with its names.
PK_COLUMN = "__syncsvc_pk"
DISTANCE_COLUMN = "__syncsvc_distance"
SCORE_COLUMN = "__syncsvc_score"


def key_match(target: Target, alias: str, json_ref: str) -> sql.Composed:
    return sql.SQL(" AND ").join(
        sql.SQL("{} = ({} ->> {})::{}").format(
            quoting.ident(alias, column),
            quoting.ident(json_ref, "pk"),
            quoting.literal(column),
            quoting.type_name(pk_type),
        )
        for column, pk_type in zip(target.pk_columns, target.pk_types, strict=True)
    )


def key_object(target: Target, alias: str) -> sql.Composed:
    return sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(
            sql.SQL("{}, {}").format(quoting.literal(c), quoting.ident(alias, c))
            for c in target.pk_columns
        )
    )


def dense_statement(target: Target) -> sql.Composed:
    return sql.SQL(
        """SELECT h.pk AS {pk}, h.distance AS {distance}, NULL::float8 AS {score}, s.*
           FROM syncsvc.search_by_vector(%(target)s, %(query)b, %(k)s, %(filter)s,
                                         %(generation)s) h
           JOIN {source} s ON {match}
           ORDER BY h.distance, h.pk"""
    ).format(
        pk=quoting.ident(PK_COLUMN),
        distance=quoting.ident(DISTANCE_COLUMN),
        score=quoting.ident(SCORE_COLUMN),
        source=statements.source(target),
        match=key_match(target, "s", "h"),
    )


def fused_statement(target: Target, ranking: sql.Composable) -> sql.Composed:
    """The dense ranking fused by reciprocal rank with ``ranking``.

    ``ranking`` is SQL for further CTEs ending in one named ``other`` with columns (pk, rank).
    """
    return sql.SQL(
        """WITH dense AS (
               SELECT h.pk, h.distance, row_number() OVER (ORDER BY h.distance, h.pk) AS rank
               FROM syncsvc.search_by_vector(%(target)s, %(query)b, %(pool)s, %(filter)s,
                                             %(generation)s) h
           ), {ranking}, fused AS (
               SELECT coalesce(d.pk, o.pk) AS pk, d.distance,
                      coalesce(1.0 / (%(rrf_k)s + d.rank), 0)
                          + coalesce(1.0 / (%(rrf_k)s + o.rank), 0) AS score
               FROM dense d FULL JOIN other o ON o.pk = d.pk
               ORDER BY score DESC, pk LIMIT %(k)s
           )
           SELECT h.pk AS {pk}, h.distance AS {distance}, h.score::float8 AS {score}, s.*
           FROM fused h JOIN {source} s ON {match}
           ORDER BY h.score DESC, h.pk"""
    ).format(
        ranking=ranking,
        source=statements.source(target),
        pk=quoting.ident(PK_COLUMN),
        distance=quoting.ident(DISTANCE_COLUMN),
        score=quoting.ident(SCORE_COLUMN),
        match=key_match(target, "s", "h"),
    )


def hybrid_statement(target: Target, filter_sql: str | None) -> sql.Composed:
    """Dense and full-text rankings fused by reciprocal rank (no sparse vectors stored)."""
    document = sql.SQL("to_tsvector('simple', {})").format(statements.input_expr(target, "s"))
    ranking = sql.SQL(
        """terms AS (
               -- Any query word may match (OR): natural-language queries rarely share every word.
               SELECT (SELECT string_agg(quote_literal(t), ' | ')
                       FROM unnest(tsvector_to_array(to_tsvector('simple', %(text)s))) t
                      )::tsquery AS q
           ), other AS (
               SELECT {key} AS pk,
                      row_number() OVER (ORDER BY ts_rank_cd({document}, terms.q) DESC, {key})
                          AS rank
               FROM {source} s, terms
               WHERE terms.q IS NOT NULL AND {document} @@ terms.q {extra}
               ORDER BY rank LIMIT %(pool)s
           )"""
    ).format(
        key=key_object(target, "s"),
        document=document,
        source=statements.source(target),
        extra=filter_clause(filter_sql),
    )
    return fused_statement(target, ranking)


def filter_clause(filter_sql: str | None) -> sql.Composable:
    # The filter is already literal SQL; escape % so it is not read as a placeholder.
    if not filter_sql:
        return sql.SQL("")
    return sql.SQL("AND ({})").format(sql.SQL(filter_sql.replace("%", "%%")))


def sparse_hybrid_statement(
    target: Target, generation: Generation, filter_sql: str | None
) -> sql.Composed:
    """Dense and sparse rankings fused by reciprocal rank (generations storing sparse vectors).

    The sparse ranking orders rows by inner product with the query's sparse vector (``<#>`` is
    its negative); a row sharing no weighted token with the query (product 0) is not ranked,
    as a row without a full-text match is not. A chunked row counts by its best chunk.
    """
    ranking = sql.SQL(
        """sparse_hits AS (
               SELECT {key} AS pk, min(v.sparse <#> %(sparse)b) AS distance
               FROM {table} v JOIN {source} s ON {join}
               WHERE v.sparse IS NOT NULL AND (v.sparse <#> %(sparse)b) < 0 {extra}
               GROUP BY 1
               ORDER BY distance, pk LIMIT %(pool)s
           ), other AS (
               SELECT pk, row_number() OVER (ORDER BY distance, pk) AS rank FROM sparse_hits
           )"""
    ).format(
        key=key_object(target, "s"),
        table=statements.vector_table(generation),
        source=statements.source(target),
        join=statements.pk_equals(target, "s", "v"),
        extra=filter_clause(filter_sql),
    )
    return fused_statement(target, ranking)
