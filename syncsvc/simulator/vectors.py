"""The simulator's vectors and success bodies, built fast enough not to be the bottleneck.

Two forms (``SimulatorConfig.vectors``):

- ``dense`` (the default) is what the real API sends: every one of the requested dimensions
  non-zero, unit length, float32 values printed as doubles in shortest round-trip form (~17
  significant digits, ~20 KB of JSON per 1,024-d vector, as DashScope prints them). Each is the
  text's lexical vector plus seeded Gaussian noise (``DENSE_NOISE`` of its length), normalised:
  deterministic per text, so tests compute it with ``embedding``, and texts sharing words still
  rank close together.
- ``lexical`` is ``syncsvc.embed.lexical.embed`` bit for bit: a few dozen non-zero entries,
  computed sparsely (same operations, same order), for hand-computable tests.

Both are written to JSON by orjson: a benchmark at hundreds of requests per second must measure
the client, not the simulator's ``json.dumps``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import numpy as np
import orjson

from syncsvc.embed import lexical

SPARSE_VOCABULARY = 250_000
FORMS = ("dense", "lexical")
DENSE_NOISE = 0.5
"""Length of the noise added to the (unit) lexical vector before normalising: every entry is
non-zero, and two texts with the same words have a cosine of about 0.8, not 1."""
_QWEN3_QUERY = "\nQuery:"

Sparse = dict[int, float]
Vector = np.ndarray[Any, np.dtype[np.float64]]


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


def _seed(text: str, dimensions: int) -> int:
    digest = hashlib.blake2b(f"{dimensions}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def realistic(text: str, dimensions: int) -> Vector:
    """The dense form of ``text`` (already ``embedding_text``): float32 values as float64."""
    noise = np.random.default_rng(_seed(text, dimensions)).standard_normal(dimensions)
    values = noise * (DENSE_NOISE / math.sqrt(dimensions))
    for index, value in lexical_sparse(text, dimensions).items():
        values[index] += value
    values /= float(np.linalg.norm(values))
    # The API computes in float32 and prints each float32 as a double: 0.030681096017360687.
    return values.astype(np.float32).astype(np.float64)


def values_of(text: str, dimensions: int, form: str) -> Vector:
    """The vector the simulator returns for an input (``embedding_text`` already applied)."""
    if form == "lexical":
        return np.asarray(dense(lexical_sparse(text, dimensions), dimensions), dtype=np.float64)
    return realistic(text, dimensions)


def embedding(text: str, dimensions: int, form: str = "dense") -> list[float]:
    """What the simulator returns for input ``text`` in ``form``, as a client parses it: the
    function tests compute expected vectors with."""
    return [float(v) for v in values_of(embedding_text(text), dimensions, form)]


def vector_json(values: Vector, base64_floats: bool = False) -> str:
    """The JSON of one embedding: a float array, or a base64 string of float32s."""
    if base64_floats:
        raw = values.astype("<f4").tobytes()
        return json.dumps(base64.b64encode(raw).decode())
    if np.isnan(values).any():
        # orjson writes NaN as null; the NaN fault needs JSON's NaN literal, as json writes it.
        return json.dumps(values.tolist())
    # orjson writes the shortest round-trip form of each float, in C: the same numbers as
    # json.dumps, many times faster.
    return orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()


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
