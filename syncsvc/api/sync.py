"""``Client``: the synchronous face of ``AsyncClient``, on an event loop of its own.

It runs its loop in a background thread, so it works in plain scripts and inside frameworks
that already run a loop; every method is the ``AsyncClient`` method of the same name.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from syncsvc.api.client import AsyncClient
from syncsvc.core.settings import Settings
from syncsvc.embed.provider import EmbeddingProvider, ProviderFactory

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(
    method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Client, P], T]:
    """The synchronous face of an ``AsyncClient`` method: same arguments, same result."""

    def call(client: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return client.call(method, *args, **kwargs)

    call.__name__ = method.__name__
    call.__qualname__ = f"Client.{method.__name__}"
    call.__doc__ = method.__doc__
    return call


class Client:
    """Synchronous face of ``AsyncClient``: same methods, arguments and results."""

    def __init__(
        self,
        database_url: str | None = None,
        settings: Settings | None = None,
        *,
        provider_factory: ProviderFactory | None = None,
        max_connections: int = 4,
    ) -> None:
        # A private loop in a daemon thread: callers may be plain scripts or already run a loop.
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="syncsvc-client", daemon=True
        )
        self._thread.start()
        self._async = self._run(
            _make_async(database_url, settings, provider_factory, max_connections)
        )

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(
        self,
        method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Run an ``AsyncClient`` method on this client's loop and wait for its result."""
        return self._run(method(self._async, *args, **kwargs))

    @property
    def settings(self) -> Settings:
        return self._async.settings

    def provider(self, name: str) -> EmbeddingProvider:
        """See ``AsyncClient.provider``."""
        return self._async.provider(name)

    search = _blocking(AsyncClient.search)
    embed_query = _blocking(AsyncClient.embed_query)
    search_vector = _blocking(AsyncClient.search_vector)
    similar = _blocking(AsyncClient.similar)
    add_target = _blocking(AsyncClient.add_target)
    remove_target = _blocking(AsyncClient.remove_target)
    targets = _blocking(AsyncClient.targets)
    target = _blocking(AsyncClient.target)
    pause_target = _blocking(AsyncClient.pause_target)
    resume_target = _blocking(AsyncClient.resume_target)
    status = _blocking(AsyncClient.status)
    failed = _blocking(AsyncClient.failed)
    grant_search = _blocking(AsyncClient.grant_search)
    revoke_search = _blocking(AsyncClient.revoke_search)
    search_grants = _blocking(AsyncClient.search_grants)
    retry_failed = _blocking(AsyncClient.retry_failed)
    retry_failed_and_wait = _blocking(AsyncClient.retry_failed_and_wait)
    estimate_reembed = _blocking(AsyncClient.estimate_reembed)
    reembed = _blocking(AsyncClient.reembed)
    jobs = _blocking(AsyncClient.jobs)
    job = _blocking(AsyncClient.job)
    generations = _blocking(AsyncClient.generations)
    promote = _blocking(AsyncClient.promote)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _make_async(
    database_url: str | None,
    settings: Settings | None,
    provider_factory: ProviderFactory | None,
    max_connections: int,
) -> AsyncClient:
    # Created on the client's own loop, so its lock and pool belong to that loop.
    return AsyncClient(
        database_url,
        settings,
        provider_factory=provider_factory,
        max_connections=max_connections,
    )
