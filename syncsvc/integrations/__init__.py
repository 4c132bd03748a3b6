"""Adapters for frameworks RAG applications build on (installed with extras)."""
