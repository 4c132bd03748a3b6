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
from psycopg import sql
from pydantic import ConfigDict

from syncsvc.client import AsyncClient, Client
from syncsvc.search import SearchHit


def where_clause(filter: dict[str, Any] | None) -> tuple[str | None, list[Any]]:
    """``{"lang": "en", "year": 2024}`` as ``s."lang" = %s AND s."year" = %s`` and its values
    (column names quoted as identifiers, values always bound)."""
    if not filter:
        return None, []
    parts = [
        sql.SQL("{} = %s").format(sql.Identifier("s", column)).as_string(None) for column in filter
    ]
    return " AND ".join(parts), list(filter.values())


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
        clause, values = where_clause(self.filter)
        conditions = [c for c in (clause, f"({self.where})" if self.where else None) if c]
        return (" AND ".join(conditions) or None), [*values, *(self.params or [])]

    def _document(self, hit: SearchHit, columns: list[str]) -> Document:
        text = "\n\n".join(str(hit.row[c]) for c in columns if hit.row.get(c) not in (None, ""))
        metadata = {**hit.row, "pk": hit.pk, "distance": hit.distance, "target": self.target}
        return Document(page_content=text, metadata=metadata)

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
