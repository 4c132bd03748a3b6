"""Loading targets and their generations from syncsvc's catalog tables."""

from __future__ import annotations

from syncsvc.core.errors import NotFoundError
from syncsvc.core.models import Capture, Generation, GenerationState, Metric, Target
from syncsvc.core.types import AsyncConn
from syncsvc.db import sqlfiles


async def load_targets(conn: AsyncConn) -> list[Target]:
    """Every target with its generations, in name order."""
    cur = await conn.execute(sqlfiles.query("catalog", "list_generations"))
    generations: dict[int, list[Generation]] = {}
    for row in await cur.fetchall():
        generation = Generation(
            id=row["id"],
            target_id=row["target_id"],
            key=row["key"],
            provider=row["provider"],
            space=row["space"],
            model=row["model"],
            dimensions=row["dimensions"],
            options=dict(row["options"]),
            state=GenerationState(row["state"]),
            table_name=row["table_name"],
        )
        generations.setdefault(generation.target_id, []).append(generation)
    cur = await conn.execute(sqlfiles.query("catalog", "list_targets"))
    return [
        Target(
            id=row["id"],
            name=row["name"],
            source_schema=row["source_schema"],
            source_table=row["source_table"],
            pk_columns=tuple(row["pk_columns"]),
            pk_types=tuple(row["pk_types"]),
            columns=tuple(row["columns"]),
            template=row["template"],
            metric=Metric(row["metric"]),
            paused_reason=row["paused_reason"],
            generations=tuple(generations.get(row["id"], ())),
            embed_labels=row["embed_labels"],
            capture=Capture(row["capture"]),
        )
        for row in await cur.fetchall()
    ]


async def running_target_ids(conn: AsyncConn) -> list[int]:
    """Ids of the targets not paused, in name order: one short statement, for every claim."""
    cur = await conn.execute(sqlfiles.query("catalog", "running_target_ids"))
    return [int(row["id"]) for row in await cur.fetchall()]


async def get_target(conn: AsyncConn, name: str) -> Target:
    for target in await load_targets(conn):
        if target.name == name:
            return target
    raise NotFoundError(f"no target named {name!r} (see 'syncsvc target list')")


def find_generation(target: Target, ref: str | int) -> Generation:
    """A generation of ``target`` by id or key."""
    for generation in target.generations:
        if str(generation.id) == str(ref) or generation.key == str(ref):
            return generation
    raise NotFoundError(f"target {target.name!r} has no generation {ref!r}")
