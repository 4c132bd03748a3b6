"""Embedding providers: the HTTP adapters and the local models, behind the ``EmbeddingProvider``
Protocol of ``syncsvc.embed.provider``; ``registry`` builds one from a configured name."""
