"""Generations: one vector table per (target, vector space), and the view of the active one."""

from __future__ import annotations

import logging
from typing import Any

from psycopg import sql
from psycopg.types.json import Jsonb

from syncsvc.core.models import Generation, GenerationState, Target, generation_key
from syncsvc.core.types import AsyncConn
from syncsvc.db import quoting, sqlfiles, statements

logger = logging.getLogger(__name__)

RESERVED_COLUMNS = frozenset(
    {"generation_id", "chunk", "embedding", "content_hash", "tokens", "truncated", "embedded_at"}
)


async def create_generation(
    conn: AsyncConn,
    target: Target,
    *,
    provider: str,
    space: str,
    model: str,
    dimensions: int,
    options: dict[str, Any],
    state: GenerationState,
) -> Generation:
    """Record a generation and create its vector table (call inside a transaction)."""
    key = generation_key(space, dimensions, options)
    cur = await conn.execute(
        sqlfiles.query("catalog", "insert_generation"),
        {
            "target_id": target.id,
            "key": key,
            "provider": provider,
            "space": space,
            "model": model,
            "dimensions": dimensions,
            "options": Jsonb(options),
            "state": state.value,
            "table_prefix": target.name,
        },
    )
    row = await cur.fetchone()
    assert row is not None
    generation = Generation(
        id=row["id"],
        target_id=target.id,
        key=key,
        provider=provider,
        space=space,
        model=model,
        dimensions=dimensions,
        options=options,
        state=state,
        table_name=row["table_name"],
    )
    await conn.execute(
        sqlfiles.query("catalog", "create_vector_table"), {"generation_id": generation.id}
    )
    return generation


async def replace_view(conn: AsyncConn, target: Target, generation: Generation) -> None:
    """Point the target's view at ``generation`` (call inside a transaction: atomic switch).

    DROP + CREATE rather than CREATE OR REPLACE because the vector column's type changes with
    the dimensions; the drop's lock waits for searches already reading the old generation.
    """
    view = sql.SQL("syncsvc.{}").format(quoting.ident(target.view_name))
    await conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(view))
    await conn.execute(
        sql.SQL("CREATE VIEW {} AS SELECT {} AS generation_id, v.* FROM {} v").format(
            view, quoting.literal(generation.id), statements.vector_table(generation)
        )
    )
    await conn.execute(
        sql.SQL("COMMENT ON VIEW {} IS {}").format(
            view,
            quoting.literal(
                f"syncsvc: vectors of target {target.name} in its active generation "
                f"{generation.id} ({generation.model}, {generation.dimensions} dims)"
            ),
        )
    )
    # The new view has no grants yet: give it to the roles allowed to search this target.
    await conn.execute(sqlfiles.query("catalog", "apply_search_grants"), {"target_id": target.id})


async def drop_generation_table(conn: AsyncConn, generation: Generation) -> None:
    await conn.execute(
        sql.SQL("DROP TABLE IF EXISTS {}").format(statements.vector_table(generation))
    )
