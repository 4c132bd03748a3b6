"""The LlamaIndex retriever, with the real ``llama-index-core``, over a target embedded by the
daemon: scored nodes carry the source rows, filters apply in the database."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore

from syncsvc import AsyncClient, Client
from syncsvc.core.types import AsyncConn
from syncsvc.integrations.llamaindex import SyncsvcLlamaRetriever
from syncsvc.providers.local import LocalHashProvider
from tests.conftest import Deployment
from tests.helpers import fast_settings, queue_empty, running_daemon, scalar, text_targets, wait_for

QUERY = "docs title 7\n\nwords of 7"


async def test_llamaindex_retriever_returns_scored_source_rows(
    conn: AsyncConn, deployment: Deployment
) -> None:
    await text_targets(conn, dimensions=64)
    await conn.execute("ALTER TABLE docs ADD COLUMN lang text DEFAULT 'en'")
    await conn.execute("UPDATE docs SET lang = 'fr' WHERE id = 7")
    async with running_daemon(deployment.owner):
        await wait_for(lambda: queue_empty(conn))
        await wait_for(lambda: scalar(conn, "SELECT count(*) = 20 FROM syncsvc.docs_embeddings"))
    provider = LocalHashProvider()

    def retrieve(**options: object) -> list[NodeWithScore]:
        with Client(deployment.owner, fast_settings(), provider_factory=lambda _: provider) as c:
            retriever = SyncsvcLlamaRetriever(client=c, target="docs", **options)  # type: ignore[arg-type]
            assert isinstance(retriever, BaseRetriever)
            return retriever.retrieve(QUERY)

    nodes = await asyncio.to_thread(retrieve, k=3)
    assert len(nodes) == 3
    best = nodes[0]
    assert best.node.get_content() == QUERY
    assert best.node.metadata["pk"] == {"id": 7} and best.node.metadata["lang"] == "fr"
    assert best.node.node_id == 'docs:{"id": 7}'
    assert best.score == pytest.approx(1.0, abs=1e-5)  # cosine similarity of the same text
    scores = [n.score or 0.0 for n in nodes]
    assert scores == sorted(scores, reverse=True)
    english = await asyncio.to_thread(retrieve, k=3, filter={"lang": "en"})
    assert 7 not in [n.node.metadata["id"] for n in english]
    assert provider.calls == 1  # the same text twice: embedded once, then from the query cache

    async with AsyncClient(
        deployment.owner, fast_settings(), provider_factory=lambda _: provider
    ) as client:
        found = await SyncsvcLlamaRetriever(async_client=client, target="docs", k=1).aretrieve(
            QUERY
        )
    assert [n.node.metadata["id"] for n in found] == [7]
