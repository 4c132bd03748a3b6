"""One definition of "empty" in every path (worker, sweep, coverage, jobs): a row whose
embedded columns hold only white space, controls or invisible format characters has no
vector, and the template's own labels never make a row non-empty."""

from __future__ import annotations

import numpy as np
import pytest

from syncsvc import jobs
from syncsvc.capture import targets
from syncsvc.capture.sweep import sweep_target
from syncsvc.core.types import AsyncConn
from syncsvc.db.catalog import get_target
from syncsvc.store import promote
from tests.conftest import Deployment
from tests.helpers import expected, fast_settings, queue_empty, running_daemon, scalar, wait_for

DIMS = 64
TEMPLATE = "Title: {title}\nBody: {body}"
INVISIBLE = ["\u00a0", "\x1f", "\u200b", "\ufeff", " \t\n", "\u3000\u2060", ""]


async def _setup(conn: AsyncConn) -> None:
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
    await conn.execute("INSERT INTO notes VALUES (1, 'a note', 'with words')")
    await conn.execute("INSERT INTO docs VALUES (1, 'real', 'text'), (2, NULL, NULL)")
    for i, blank in enumerate(INVISIBLE, start=3):
        await conn.execute("INSERT INTO docs VALUES (%s, %s, NULL)", (i, blank))
    for name in ("docs", "notes"):
        spec = targets.TargetSpec(
            name=name,
            table=name,
            columns=("title", "body"),
            model="local-hash",
            dimensions=DIMS,
            template=TEMPLATE,
        )
        await targets.add_target(conn, fast_settings(), spec)


async def _ids(conn: AsyncConn) -> list[int]:
    cur = await conn.execute("SELECT id FROM syncsvc.docs_embeddings ORDER BY id")
    return [r["id"] for r in await cur.fetchall()]


async def test_empty_rows_have_no_vector_in_every_path(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await _setup(conn)
    async with running_daemon(deployment.owner):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: _count_is(conn, "notes", 1))
        assert await _ids(conn) == [1]  # the labels alone are not text
        stored = await scalar(conn, "SELECT embedding FROM syncsvc.docs_embeddings")
        np.testing.assert_allclose(
            stored.to_numpy(), expected("Title: real\nBody: text", DIMS), atol=1e-6
        )
        # Editing an embedded row to "empty" removes its vector at once.
        await conn.execute("UPDATE docs SET title = E'\\u00a0', body = NULL WHERE id = 1")
        await wait_for(lambda: _count_is(conn, "docs", 0))
        await conn.execute("UPDATE notes SET body = 'still embedded' WHERE id = 1")
        await wait_for(lambda: _notes_is(conn, "Title: a note\nBody: still embedded"))
    target = await get_target(conn, "docs")
    generation = target.active
    assert generation is not None
    # Sweeps never queue them again (they were re-queued and dropped forever before).
    for _ in range(2):
        result = await sweep_target(conn, target)
        assert result.enqueued == 0
    assert await scalar(conn, "SELECT count(*) FROM syncsvc.queue") == 0
    measured = await promote.coverage(conn, target, generation)
    assert (measured.rows, measured.current, measured.missing) == (0, 0, 0)
    estimate = await jobs.estimate(
        conn, fast_settings(), "docs", model="local-hash", dimensions=DIMS
    )
    assert estimate.rows == 0


@pytest.mark.parametrize("blank", INVISIBLE)
async def test_has_text_in_sql(conn: AsyncConn, blank: str) -> None:
    assert await scalar(conn, "SELECT syncsvc.has_text(%s)", (blank,)) is False
    assert await scalar(conn, "SELECT syncsvc.has_text(%s)", (blank + "x",)) is True
    assert await scalar(conn, "SELECT syncsvc.has_text(%s)", ("标题",)) is True


async def _count_is(conn: AsyncConn, view: str, n: int) -> bool:
    return bool(await scalar(conn, f"SELECT count(*) = %s FROM syncsvc.{view}_embeddings", (n,)))


async def _notes_is(conn: AsyncConn, text: str) -> bool:
    stored = await scalar(conn, "SELECT embedding FROM syncsvc.notes_embeddings WHERE id = 1")
    return bool(np.allclose(stored.to_numpy(), expected(text, DIMS), atol=1e-6))


async def test_each_chunk_row_stores_its_own_tokens(
    conn: AsyncConn, deployment: Deployment
) -> None:
    from syncsvc.core.settings import ProviderSettings
    from syncsvc.providers.registry import build_provider

    settings = fast_settings().model_copy(
        update={
            "providers": {
                "local-hash": ProviderSettings(
                    profile="local-hash", overlong="chunk", max_tokens_per_input=8
                )
            }
        }
    )
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    await conn.execute("CREATE TABLE notes (id int PRIMARY KEY, title text, body text)")
    words = " ".join(f"w{i}" for i in range(30))
    await conn.execute("INSERT INTO docs VALUES (1, 'long', %s)", (words,))
    await conn.execute("INSERT INTO notes VALUES (1, 'short', 'note')")
    for name in ("docs", "notes"):
        spec = targets.TargetSpec(
            name=name, table=name, columns=("title", "body"), model="local-hash", dimensions=DIMS
        )
        await targets.add_target(conn, settings, spec)
    provider = build_provider("local-hash", settings)
    async with running_daemon(deployment.owner, settings, provider=provider):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: _count_is(conn, "notes", 1))
    cur = await conn.execute("SELECT chunk, tokens FROM syncsvc.docs_g1 ORDER BY chunk")
    rows = [(r["chunk"], r["tokens"]) for r in await cur.fetchall()]
    assert len(rows) == 4  # 31 words in pieces of 8
    assert [t for _, t in rows] == [8, 8, 8, 7]
    assert sum(t for _, t in rows) == 31


def test_percentages_round_down() -> None:
    from syncsvc.observe.status import percent

    assert percent(23_004, 23_008) == "99.9%"
    assert percent(23_008, 23_008) == "100.0%"
    assert percent(199, 200, 0) == "99%"
    assert percent(0, 0) == "-"


async def test_a_row_failing_only_in_the_generation_being_built(
    conn: AsyncConn, deployment: Deployment
) -> None:
    from syncsvc.embed.provider import ErrorKind, ProviderError
    from syncsvc.observe import status
    from syncsvc.providers.local import LocalHashProvider
    from tests.jobs_support import job_settings

    class PickyAt128(LocalHashProvider):
        async def embed(self, request):  # type: ignore[no-untyped-def]
            if request.dimensions == 128 and any("bad" in t for t in request.texts):
                raise ProviderError(
                    ErrorKind.BAD_INPUT,
                    "Input data may contain inappropriate content.",
                    code="DataInspectionFailed",
                    status=400,
                )
            return await super().embed(request)

    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, title text, body text)")
    await conn.execute("INSERT INTO docs VALUES (1, 'good', 'row'), (2, 'bad', 'row')")
    spec = targets.TargetSpec(
        name="docs", table="docs", columns=("title", "body"), model="local-hash", dimensions=DIMS
    )
    await targets.add_target(conn, fast_settings(), spec)
    async with running_daemon(deployment.owner, job_settings(), provider=PickyAt128()):
        await wait_for(lambda: _count_is(conn, "docs", 2))
        job = await jobs.request_reembed(
            conn, job_settings(), "docs", model="local-hash", dimensions=128
        )
        await wait_for(lambda: _failed_rows(conn, 1))
    cur = await conn.execute("SELECT target, pk, generation FROM syncsvc.failures")
    assert [dict(r) for r in await cur.fetchall()] == [
        {"target": "docs", "pk": [2], "generation": job.generation_id}
    ]
    shown = next(s for s in await status.collect(conn) if s.target == "docs")
    assert shown.failed == 0  # the searched generation is whole
    by_id = {g["id"]: g["failed"] for g in shown.generations}
    assert by_id == {1: 0, job.generation_id: 1}


async def _failed_rows(conn: AsyncConn, n: int) -> bool:
    return bool(await scalar(conn, "SELECT count(*) = %s FROM syncsvc.failures", (n,)))


async def test_embed_labels_opt_out_embeds_label_only_rows(
    conn: AsyncConn, deployment: Deployment
) -> None:
    """``embed_labels`` (off by default) embeds rows whose columns are empty as the
    template's labels; a row with nothing visible at all still has no vector."""
    await conn.execute("CREATE TABLE cards (id int PRIMARY KEY, title text, body text)")
    await conn.execute("INSERT INTO cards VALUES (1, 'real', 'text'), (2, NULL, NULL)")
    await conn.execute("CREATE TABLE bare (id int PRIMARY KEY, title text)")
    await conn.execute("INSERT INTO bare VALUES (1, 'x'), (2, NULL)")
    await _setup(conn)  # docs: the default, beside it
    for name, columns, template in (
        ("cards", ("title", "body"), TEMPLATE),
        ("bare", ("title",), "{title}"),
    ):
        spec = targets.TargetSpec(
            name=name,
            table=name,
            columns=columns,
            model="local-hash",
            dimensions=DIMS,
            template=template,
            embed_labels=True,
        )
        await targets.add_target(conn, fast_settings(), spec)
    assert (await get_target(conn, "cards")).embed_labels is True
    assert (await get_target(conn, "docs")).embed_labels is False
    async with running_daemon(deployment.owner):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: _count_is(conn, "cards", 2))
        await wait_for(lambda: _count_is(conn, "notes", 1))
    labels = await scalar(conn, "SELECT embedding FROM syncsvc.cards_embeddings WHERE id = 2")
    np.testing.assert_allclose(labels.to_numpy(), expected("Title: \nBody: ", DIMS), atol=1e-6)
    assert await _ids(conn) == [1]  # docs keeps the default: labels alone are not text
    cur = await conn.execute("SELECT id FROM syncsvc.bare_embeddings ORDER BY id")
    assert [r["id"] for r in await cur.fetchall()] == [1]  # no labels: still empty
    target = await get_target(conn, "cards")
    assert target.active is not None
    measured = await promote.coverage(conn, target, target.active)
    assert (measured.rows, measured.current) == (2, 2)
