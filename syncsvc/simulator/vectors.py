"""The simulator's vectors and success bodies, built fast enough not to be the bottleneck.

A lexical vector has a few dozen non-zero entries out of 1,024 or more, so it is computed
sparsely (same operations, same order, hence bit-identical to ``syncsvc.embed.lexical.embed``) and
written to JSON by orjson: a benchmark at hundreds of requests per second must measure the
client, not the simulator's ``json.dumps``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import struct
from typing import Any

import orjson

from syncsvc.embed import lexical

SPARSE_VOCABULARY = 250_000
_QWEN3_QUERY = "\nQuery:"

Sparse = dict[int, float]


def embedding_text(text: str) -> str:
    """What a Qwen3 host embeds: an instructed query is embedded by its query part only."""
    if text.startswith("Instruct: ") and _QWEN3_QUERY in text:
        return text.split(_QWEN3_QUERY, 1)[1]
    return text


def lexical_sparse(text: str, dimensions: int) -> Sparse:
    """``lexical.embed(text, dimensions)`` as {index: value} for its non-zero entries."""
    accumulated: Sparse = {}
    for feature, weight in lexical.features(text):
        index, sign = lexical.bucket(feature, dimensions)
        accumulated[index] = accumulated.get(index, 0.0) + sign * weight
    # Summing in index order matches the dense sum: the zeros in between add nothing.
    norm = math.sqrt(sum(accumulated[i] * accumulated[i] for i in sorted(accumulated)))
    if norm == 0.0:
        return {0: 1.0}
    return {i: v / norm for i, v in accumulated.items()}


def dense(vector: Sparse, dimensions: int) -> list[float]:
    values = [0.0] * dimensions
    for index, value in vector.items():
        values[index] = value
    return values


def vector_json(vector: Sparse, dimensions: int, base64_floats: bool = False) -> str:
    """The JSON of one embedding: a float array, or a base64 string of float32s."""
    if base64_floats:
        raw = struct.pack(f"<{dimensions}f", *dense(vector, dimensions))
        return json.dumps(base64.b64encode(raw).decode())
    values = dense(vector, dimensions)
    if any(v != v for v in vector.values()):
        # orjson writes NaN as null; the NaN fault needs JSON's NaN literal, as json writes it.
        return json.dumps(values)
    # orjson writes the shortest round-trip form of each float, in C: the same numbers, 3x faster.
    return orjson.dumps(values).decode()


def sparse_entries(text: str) -> list[dict[str, Any]]:
    """A deterministic sparse representation: one entry per distinct content word."""
    counts: dict[str, int] = {}
    for word in lexical.words(text):
        counts[word] = counts.get(word, 0) + 1
    total = sum(c * c for c in counts.values()) ** 0.5 or 1.0
    entries = []
    for word, count in counts.items():
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        index = int.from_bytes(digest, "little") % SPARSE_VOCABULARY
        entries.append({"index": index, "value": round(count / total, 6), "token": word})
    return entries


def compatible_body(
    model: str,
    vectors: list[str],
    indices: list[int],
    tokens: int,
    rid: str,
) -> str:
    """``{"data": [{"embedding", "index", "object"}], "model", "object", "usage", "id"}``."""
    data = ",".join(
        f'{{"embedding":{vectors[i]},"index":{i},"object":"embedding"}}' for i in indices
    )
    tail = json.dumps(
        {
            "model": model,
            "object": "list",
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "id": rid,
        },
        separators=(",", ":"),
    )
    return f'{{"data":[{data}],{tail[1:]}'


def native_body(
    vectors: list[str],
    indices: list[int],
    tokens: int,
    rid: str,
    sparse: list[list[dict[str, Any]]] | None,
) -> str:
    """``{"status_code", "request_id", "code", "message", "output": {"embeddings"}, "usage"}``."""
    items = []
    for i in indices:
        extra = ""
        if sparse is not None:
            extra = '"sparse_embedding":' + json.dumps(sparse[i], separators=(",", ":")) + ","
        items.append(f'{{{extra}"embedding":{vectors[i]},"text_index":{i}}}')
    head = json.dumps(
        {"status_code": 200, "request_id": rid, "code": "", "message": ""},
        separators=(",", ":"),
    )
    usage = json.dumps({"total_tokens": tokens})
    return f'{head[:-1]},"output":{{"embeddings":[{",".join(items)}]}},"usage":{usage}}}'
