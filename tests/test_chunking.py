"""Chunking per target: exact boundaries, one vector row per chunk with its offsets, an edit
of one paragraph re-embeds that chunk only, and search returns one hit per row."""

from __future__ import annotations

import numpy as np
import pytest

from syncsvc.capture import targets
from syncsvc.core.errors import ValidationError
from syncsvc.core.types import AsyncConn
from syncsvc.embed.chunking import Chunk, Chunking, split
from syncsvc.embed.tokens import LexicalTokens
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import Deployment
from tests.helpers import (
    expected,
    fast_settings,
    queue_empty,
    running_daemon,
    scalar,
    text_targets,
    wait_for,
)

WORDS = LexicalTokens()  # local-hash counts words: boundaries are easy to state exactly
PARAGRAPHS = [f"Paragraph {i} has exactly eight words in it." for i in range(10)]
TEXT = "\n\n".join(PARAGRAPHS)


def spans(chunks: list[Chunk]) -> list[tuple[int, int]]:
    return [(c.start, c.end) for c in chunks]


def test_paragraphs_are_packed_whole_within_the_size() -> None:
    chunks = split(TEXT, Chunking(tokens=20), WORDS)
    assert [c.text for c in chunks] == ["\n\n".join(PARAGRAPHS[i : i + 2]) for i in range(0, 10, 2)]
    assert spans(chunks) == [(88 * i, 88 * i + 86) for i in range(5)]
    assert all(TEXT[c.start : c.end] == c.text for c in chunks)


def test_overlap_repeats_the_last_whole_units() -> None:
    chunks = split(TEXT, Chunking(tokens=20, overlap=8), WORDS)
    assert [c.text for c in chunks] == ["\n\n".join(PARAGRAPHS[i : i + 2]) for i in range(9)]


def test_long_paragraphs_fall_back_to_sentences_then_tokens() -> None:
    text = "One two three four five. Six seven eight nine ten. " + "word " * 12
    chunks = split(text.strip(), Chunking(tokens=10), WORDS)
    assert [c.text for c in chunks] == [
        "One two three four five. Six seven eight nine ten.",
        "word word word word word word word word word word",
        "word word",
    ]


def test_markdown_headings_start_a_chunk() -> None:
    text = "# Title\n\nIntro words here.\n\n## Part two\n\nMore words. And more."
    chunks = split(text, Chunking(tokens=50, markdown=True), WORDS)
    assert [c.text for c in chunks] == [
        "# Title\n\nIntro words here.",
        "## Part two\n\nMore words. And more.",
    ]
    assert split(text, Chunking(tokens=50), WORDS)[0].text == text  # text mode: one chunk


@pytest.mark.parametrize(
    ("chunking", "message"),
    [(Chunking(tokens=4), "between 8 and"), (Chunking(tokens=10, overlap=10), "less than")],
)
async def test_bad_chunking_is_refused_up_front(
    conn: AsyncConn, chunking: Chunking, message: str
) -> None:
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    spec = targets.TargetSpec(
        name="docs",
        table="docs",
        columns=("body",),
        model="local-hash",
        dimensions=64,
        provider="local-hash",
        options={"chunking": chunking.as_option()},
    )
    with pytest.raises(ValidationError, match=message):
        await targets.add_target(conn, fast_settings(), spec)


async def _chunks(conn: AsyncConn) -> list[dict[str, object]]:
    cur = await conn.execute(
        "SELECT chunk, chunk_start, chunk_end, tokens, embedding FROM syncsvc.docs_embeddings "
        "WHERE id = 1 ORDER BY chunk"
    )
    return [dict(r) for r in await cur.fetchall()]


async def test_chunked_target_embeds_chunks_and_re_embeds_only_changed_ones(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await text_targets(conn, names=("notes",), dimensions=64)  # the healthy neighbour
    await conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    await conn.execute("INSERT INTO docs VALUES (1, %s), (2, 'a short row')", (TEXT,))
    spec = targets.TargetSpec(
        name="docs",
        table="docs",
        columns=("body",),
        model="local-hash",
        dimensions=64,
        provider="local-hash",
        options={"chunking": Chunking(tokens=8).as_option()},
    )
    await targets.add_target(conn, fast_settings(), spec)
    provider = LocalHashProvider()
    async with running_daemon(deployment.owner, provider=provider):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 11 FROM syncsvc.docs_g2"))
        rows = await _chunks(conn)
        assert [(r["chunk"], r["chunk_start"], r["chunk_end"], r["tokens"]) for r in rows] == [
            (i, 44 * i, 44 * i + 42, 8) for i in range(10)
        ]
        for i, row in enumerate(rows):
            np.testing.assert_allclose(
                row["embedding"].to_numpy(), expected(PARAGRAPHS[i], 64), atol=1e-6
            )
        before = provider.inputs
        edited = PARAGRAPHS.copy()
        edited[4] = "Paragraph four now says something else entirely."
        await conn.execute("UPDATE docs SET body = %s WHERE id = 1", ("\n\n".join(edited),))

        async def re_embedded() -> bool:
            chunk = await scalar(
                conn, "SELECT embedding FROM syncsvc.docs_embeddings WHERE id = 1 AND chunk = 4"
            )
            return bool(np.allclose(chunk.to_numpy(), expected(edited[4], 64), atol=1e-6))

        await wait_for(re_embedded)
        await wait_for(lambda: queue_empty(conn))
        assert provider.inputs - before == 1  # the changed paragraph, nothing else
        after = await _chunks(conn)
        assert [r["chunk_end"] for r in after][4] == 44 * 4 + len(edited[4])
        assert len(after) == 10
    cur = await conn.execute(
        "SELECT (pk->>'id')::int AS id, distance FROM syncsvc.search_by_vector('docs', %s, 5)",
        (str([float(x) for x in expected(PARAGRAPHS[7], 64)]),),
    )
    hits = await cur.fetchall()
    assert [h["id"] for h in hits] == [1, 2]  # one hit per row, by its best chunk
    assert hits[0]["distance"] == pytest.approx(0.0, abs=1e-5)
    notes = await scalar(conn, "SELECT count(*) FROM syncsvc.notes_embeddings")
    assert notes == 20


def test_the_cli_registers_a_chunked_target(db_url: str) -> None:
    import json
    import os
    import subprocess
    import sys

    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE pages (id int PRIMARY KEY, body text)")
    done = subprocess.run(
        [sys.executable, "-m", "syncsvc", "target", "add", "pages", "--table", "pages",
         "--columns", "body", "--provider", "local-hash", "--dimensions", "64",
         "--chunk-tokens", "64", "--chunk-overlap", "8", "--chunk-markdown", "--json"],
        env={**os.environ, "SYNCSVC_DATABASE_URL": db_url},
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    chunking = {"tokens": 64, "overlap": 8, "mode": "markdown"}
    assert json.loads(done.stdout)["options"] == {"chunking": chunking}
    with psycopg.connect(db_url) as conn:
        row = conn.execute("SELECT options FROM syncsvc.generations").fetchone()
    assert row == ({"chunking": chunking},)
