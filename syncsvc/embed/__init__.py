"""Turning text into vectors: the provider Protocol and profiles, tokens, chunking, rate
limits and fair request slots, reply checks, and the embedder that drives a provider."""
