"""The SQLAlchemy 2 recipe of docs/search.md, run as written against a real database."""

from __future__ import annotations

import asyncio

from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, Integer, Text, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from syncsvc import AsyncClient
from syncsvc.core.types import AsyncConn
from syncsvc.providers.local import LocalHashProvider
from syncsvc.search.engine import QueryVector
from tests.helpers import fast_settings
from tests.test_search import DIMS, synced_docs


class Base(DeclarativeBase):
    pass


class Doc(Base):
    __tablename__ = "docs"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    price: Mapped[int] = mapped_column(Integer)


class DocEmbedding(Base):
    """The target's view of its active generation (read-only; syncsvc writes the vectors)."""

    __tablename__ = "docs_embeddings"
    __table_args__ = {"schema": "syncsvc"}

    generation_id: Mapped[int] = mapped_column(Integer)
    # A view has no primary key; the vector table's (key, chunk) identifies a row.
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    chunk: Mapped[int] = mapped_column(Integer, primary_key=True)
    embedding: Mapped[list[float]] = mapped_column(Vector(DIMS))


def nearest(url: str, query: QueryVector, topic: str, k: int) -> list[tuple[int, float]]:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    distance = DocEmbedding.embedding.cosine_distance(query.to_numpy()).label("distance")
    statement = (
        select(Doc, distance)
        .join(DocEmbedding, DocEmbedding.id == Doc.id)
        # The query vector's generation must be the one the view shows: never mix spaces.
        .where(DocEmbedding.generation_id == query.generation_id, Doc.topic == topic)
        .order_by(distance)
        .limit(k)
    )
    try:
        with Session(engine) as session:
            return [(doc.id, dist) for doc, dist in session.execute(statement)]
    finally:
        engine.dispose()


async def test_sqlalchemy_recipe_matches_client(conn: AsyncConn, db_url: str) -> None:
    await synced_docs(conn, db_url)
    provider = LocalHashProvider()
    async with AsyncClient(db_url, fast_settings(), provider_factory=lambda _: provider) as client:
        query = await client.embed_query("docs", "knead the dough and bake bread")
        expected = await client.search(
            "docs", "knead the dough and bake bread", k=3, where="s.topic = 'food'"
        )
    rows = await asyncio.to_thread(nearest, db_url, query, "food", 3)
    assert [r[0] for r in rows] == [h.pk["id"] for h in expected]
    assert [r[1] for r in rows] == [h.distance for h in expected]
    assert provider.calls == 1
    stale = QueryVector(query.generation_id + 1, "x", query.vector, False)
    assert await asyncio.to_thread(nearest, db_url, stale, "food", 3) == []
