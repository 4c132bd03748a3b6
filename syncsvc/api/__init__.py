"""The Python API: ``AsyncClient`` and its synchronous face ``Client``."""
