"""The LangChain retriever, with the real ``langchain-core``, over a target embedded by the
daemon: the source rows come back as Documents, filters apply in the database."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

from syncsvc import AsyncClient, Client
from syncsvc.core.types import AsyncConn
from syncsvc.integrations.common import where_clause
from syncsvc.integrations.langchain import SyncsvcRetriever
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import Deployment
from tests.helpers import fast_settings, queue_empty, running_daemon, scalar, text_targets, wait_for


async def _embedded(conn: AsyncConn) -> None:
    await wait_for(lambda: queue_empty(conn))
    await wait_for(
        lambda: scalar(conn, "SELECT count(*) = 20 FROM syncsvc.docs_embeddings"), timeout=30
    )


async def test_retriever_returns_source_rows_as_documents(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await text_targets(conn, dimensions=64)
    await conn.execute("ALTER TABLE docs ADD COLUMN lang text DEFAULT 'en'")
    await conn.execute("UPDATE docs SET lang = 'fr' WHERE id = 7")
    async with running_daemon(deployment.owner):
        await _embedded(conn)
    provider = LocalHashProvider()

    def search(**options: object) -> list[Document]:
        with Client(deployment.owner, fast_settings(), provider_factory=lambda _: provider) as c:
            retriever = SyncsvcRetriever(client=c, target="docs", **options)  # type: ignore[arg-type]
            assert isinstance(retriever, BaseRetriever)
            return retriever.invoke("docs title 7\n\nwords of 7")

    docs = await asyncio.to_thread(search, k=3)
    assert len(docs) == 3
    assert docs[0].page_content == "docs title 7\n\nwords of 7"
    assert docs[0].metadata["pk"] == {"id": 7} and docs[0].metadata["lang"] == "fr"
    assert docs[0].metadata["target"] == "docs"
    assert docs[0].metadata["distance"] == pytest.approx(0.0, abs=1e-6)
    english = await asyncio.to_thread(search, k=3, filter={"lang": "en"})
    assert 7 not in [d.metadata["id"] for d in english] and len(english) == 3
    few = await asyncio.to_thread(
        search, k=5, where="s.id < %s", params=[4], content_columns=["title"]
    )
    assert sorted(d.metadata["id"] for d in few) == [1, 2, 3]
    assert {d.page_content for d in few} == {f"docs title {i}" for i in (1, 2, 3)}
    assert provider.calls == 1  # one text, embedded once, then served from the query cache

    async with AsyncClient(
        deployment.owner, fast_settings(), provider_factory=lambda _: provider
    ) as client:
        retriever = SyncsvcRetriever(async_client=client, target="docs", k=1)
        found = await retriever.ainvoke("docs title 7\n\nwords of 7")
    assert [d.metadata["id"] for d in found] == [7]


def test_filters_quote_columns_and_bind_values() -> None:
    clause, values = where_clause({"lang": "en", 'odd"name': 3})
    assert clause == '"s"."lang" = %s AND "s"."odd""name" = %s'
    assert values == ["en", 3]
    assert where_clause(None) == (None, [])
