"""A LangChain retriever over a syncsvc target (``pip install syncsvc[langchain]``).

Searches go through ``syncsvc.Client`` (the query cache, the target's active generation,
metadata filters bound as parameters) and return each hit's source row as a ``Document``.
Writes go through the table itself: insert or edit rows and syncsvc embeds them::

    from syncsvc import Client
    from syncsvc.integrations.langchain import SyncsvcRetriever

    retriever = SyncsvcRetriever(client=Client(url), target="articles", k=5,
                                 filter={"lang": "en"})
    docs = retriever.invoke("how do telescopes work")
"""

from __future__ import annotations

from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict

from syncsvc.api.client import AsyncClient
from syncsvc.api.sync import Client
from syncsvc.integrations.common import condition, content, metadata
from syncsvc.search.engine import SearchHit


class SyncsvcRetriever(BaseRetriever):
    """The ``k`` rows of ``target`` nearest in meaning to the query, as Documents.

    ``page_content`` is the row's ``content_columns`` (default: the target's embedded
    columns) joined by blank lines; ``metadata`` holds the whole row plus ``pk``, ``distance``
    and ``target``. ``filter`` keeps rows whose columns equal the given values; ``where``
    (with ``params``) takes any SQL condition over the source row ``s``.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    client: Client | None = None
    async_client: AsyncClient | None = None
    target: str
    k: int = 4
    filter: dict[str, Any] | None = None
    where: str | None = None
    params: list[Any] | None = None
    content_columns: list[str] | None = None

    def _condition(self) -> tuple[str | None, list[Any]]:
        return condition(self.filter, self.where, self.params)

    def _document(self, hit: SearchHit, columns: list[str]) -> Document:
        return Document(page_content=content(hit, columns), metadata=metadata(hit, self.target))

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.client is None:
            raise ValueError("SyncsvcRetriever needs client=syncsvc.Client(...) for invoke()")
        where, params = self._condition()
        columns = self.content_columns or list(self.client.target(self.target).columns)
        hits = self.client.search(self.target, query, k=self.k, where=where, params=params)
        return [self._document(h, columns) for h in hits]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.async_client is None:
            raise ValueError(
                "SyncsvcRetriever needs async_client=syncsvc.AsyncClient(...) for ainvoke()"
            )
        where, params = self._condition()
        target = await self.async_client.target(self.target)
        columns = self.content_columns or list(target.columns)
        hits = await self.async_client.search(
            self.target, query, k=self.k, where=where, params=params
        )
        return [self._document(h, columns) for h in hits]
