"""Search quality of the offline embedders on the shipped labelled sets.

Embeds the 80 documents of ``tests/data/queries.json`` (rendered as the default template,
``{title}\\n\\n{body}``) and ranks them for two query sets: the original queries (which share
words with their documents) and ``tests/data/paraphrases.json`` (which mostly do not). Prints
recall@5 and MRR of ``local`` (WordLlama) and ``local-hash`` at 64/128/256 dimensions, and
their speed, then writes the ``## Search quality of the offline models`` section of
BENCHMARKS.md. ``tests/test_search_quality.py`` checks the same through the real pipeline.
Run: .venv/bin/python bench/quality_bench.py
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.report import machine, write_section
from syncsvc.embed import lexical
from syncsvc.providers.wordllama import embed_texts

HEADING = "Search quality of the offline models"
DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
K = 5
Embed = Callable[[list[str], int], np.ndarray[Any, Any]]


def local_hash(texts: list[str], dims: int) -> np.ndarray[Any, Any]:
    return np.array([lexical.embed(t, dims) for t in texts], dtype=np.float32)


def scores(
    embed: Embed, docs: list[dict[str, Any]], queries: list[dict[str, Any]], dims: int
) -> tuple[float, float]:
    ids = [d["id"] for d in docs]
    matrix = embed([f"{d['title']}\n\n{d['body']}" for d in docs], dims)
    recall = mrr = 0.0
    for query in queries:
        vector = embed([query["text"]], dims)[0]
        ranked = [ids[i] for i in np.argsort(-(matrix @ vector), kind="stable")]
        relevant = set(query["relevant"])
        recall += len(set(ranked[:K]) & relevant) / len(relevant)
        mrr += next(1 / (i + 1) for i, pk in enumerate(ranked) if pk in relevant)
    return recall / len(queries), mrr / len(queries)


def speed(embed: Embed, texts: list[str]) -> float:
    embed(texts[:10], 256)  # load
    started = time.perf_counter()
    embed(texts, 256)
    return len(texts) / (time.perf_counter() - started)


def main() -> None:
    labelled = json.loads((DATA / "queries.json").read_text(encoding="utf-8"))
    paraphrases = json.loads((DATA / "paraphrases.json").read_text(encoding="utf-8"))["queries"]
    docs = labelled["documents"]
    rows = []
    for name, embed in (("local (WordLlama l2_supercat)", embed_texts), ("local-hash", local_hash)):
        for dims in (256, 128, 64):
            same = scores(embed, docs, labelled["queries"], dims)
            other = scores(embed, docs, paraphrases, dims)
            figures = " | ".join(f"{x:.2f}" for x in (*same, *other))
            rows.append(f"| {name} | {dims} | {figures} |")
            print(rows[-1])
    texts = [f"short text number {i} about things" for i in range(20_000)]
    rates = {
        name: speed(e, texts) for name, e in (("local", embed_texts), ("local-hash", local_hash))
    }
    body = (
        f"{len(docs)} documents, {len(labelled['queries'])} queries sharing words with their "
        f"documents and {len(paraphrases)} paraphrases that mostly do not (`tests/data/`); "
        f"recall@5 and MRR; {machine()}. `python bench/quality_bench.py`\n\n"
        "| model | dims | recall@5 | MRR | recall@5, paraphrases | MRR, paraphrases |\n"
        "|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        "`local-hash` only matches shared words: it does well when a query repeats its "
        "document's words and falls to near chance on paraphrases. `local` (the demo's "
        "default) embeds meaning with no download and no API call: about "
        f"{rates['local']:,.0f} short texts/s on one core (local-hash "
        f"{rates['local-hash']:,.0f}/s). Hosted models (text-embedding-v4, Qwen3-Embedding) "
        "are stronger still; `local` is for offline installs, demos and tests of meaning."
    )
    write_section(HEADING, body)
    print(body)


if __name__ == "__main__":
    main()
