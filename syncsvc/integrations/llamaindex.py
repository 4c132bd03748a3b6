"""A LlamaIndex retriever over a syncsvc target (``pip install syncsvc[llamaindex]``).

Searches go through ``syncsvc.Client`` (the query cache, the active generation, metadata
filters bound as parameters); each hit comes back as a ``NodeWithScore`` whose node holds the
row's text and the source row as metadata. Writes go through the table itself::

    from syncsvc import Client
    from syncsvc.integrations.llamaindex import SyncsvcLlamaRetriever

    retriever = SyncsvcLlamaRetriever(client=Client(url), target="articles", k=5)
    nodes = retriever.retrieve("how do telescopes work")
"""

from __future__ import annotations

import json
from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from syncsvc.api.client import AsyncClient
from syncsvc.api.sync import Client
from syncsvc.core.models import Metric, Target
from syncsvc.integrations.common import condition, content, metadata
from syncsvc.search.engine import SearchHit


def score(distance: float | None, metric: Metric) -> float | None:
    """Higher is nearer, as LlamaIndex expects: cosine similarity, inner product, -L2."""
    if distance is None:
        return None
    return 1.0 - distance if metric is Metric.COSINE else -distance


class SyncsvcLlamaRetriever(BaseRetriever):
    """The ``k`` rows of ``target`` nearest in meaning to the query, as scored nodes."""

    def __init__(
        self,
        *,
        target: str,
        client: Client | None = None,
        async_client: AsyncClient | None = None,
        k: int = 4,
        filter: dict[str, Any] | None = None,
        where: str | None = None,
        params: list[Any] | None = None,
        content_columns: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.target = target
        self.client = client
        self.async_client = async_client
        self.k = k
        self.filter = filter
        self.where = where
        self.params = params
        self.content_columns = content_columns

    def _node(self, hit: SearchHit, found: Target) -> NodeWithScore:
        columns = self.content_columns or list(found.columns)
        node = TextNode(
            id_=f"{self.target}:{json.dumps(hit.pk, sort_keys=True, default=str)}",
            text=content(hit, columns),
            metadata=metadata(hit, self.target),
        )
        return NodeWithScore(node=node, score=score(hit.distance, found.metric))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.client is None:
            raise ValueError("SyncsvcLlamaRetriever needs client=syncsvc.Client(...)")
        where, params = condition(self.filter, self.where, self.params)
        found = self.client.target(self.target)
        hits = self.client.search(
            self.target, query_bundle.query_str, k=self.k, where=where, params=params
        )
        return [self._node(h, found) for h in hits]

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.async_client is None:
            return self._retrieve(query_bundle)
        where, params = condition(self.filter, self.where, self.params)
        found = await self.async_client.target(self.target)
        hits = await self.async_client.search(
            self.target, query_bundle.query_str, k=self.k, where=where, params=params
        )
        return [self._node(h, found) for h in hits]
