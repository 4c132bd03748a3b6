"""Runs of bench/capture_bench.py side by side: one run's figures (``Sample``), the ratios to
the plain table, and the medians over runs saved with ``--save`` (``--combine``)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float


Ratio = Callable[[str, str, str], float]
"""(statement, table, "wall" | "cpu") -> that table's figure / plain's."""


def ratio_of(results: dict[str, dict[str, Sample]]) -> Ratio:
    def ratio(statement: str, table: str, kind: str) -> float:
        plain = getattr(results[statement]["plain"], kind)
        return float(getattr(results[statement][table], kind) / plain) if plain else math.nan

    return ratio


def paired(runs: list[dict[str, dict[str, Sample]]]) -> Ratio:
    """The median of the runs' own ratios: each run compares tables measured side by side, so
    the machine's load in that run falls on both."""

    def ratio(statement: str, table: str, kind: str) -> float:
        values = [ratio_of(r)(statement, table, kind) for r in runs]
        values = [v for v in values if not math.isnan(v)]
        return statistics.median(values) if values else math.nan

    return ratio


def median(runs: list[dict[str, dict[str, Sample]]]) -> dict[str, dict[str, Sample]]:
    """Per statement and table, the median over runs (each already a median of its rounds)."""
    return {
        statement: {
            t: Sample(
                statistics.median(r[statement][t].wall for r in runs),
                statistics.median(r[statement][t].cpu for r in runs),
            )
            for t in by_table
        }
        for statement, by_table in runs[0].items()
    }


def load(path: str) -> dict[str, Any]:
    run: dict[str, Any] = json.loads(Path(path).read_text())
    for part in ("single", "bulk"):
        run[part] = {
            s: {t: Sample(*sample) for t, sample in by_table.items()}
            for s, by_table in run[part].items()
        }
    return run


def spread(runs: list[dict[str, Any]]) -> str:
    """Per statement, the lowest and highest WAL / plain ratio of single runs: the noise band
    the medians sit in (the two tables run the very same statements)."""

    def band(part: str, statement: str, kind: str) -> str:
        by_table = [r[part][statement] for r in runs]
        ratios = [
            getattr(t["walled"], kind) / getattr(t["plain"], kind)
            for t in by_table
            if getattr(t["plain"], kind)
        ]
        return f"{min(ratios):.2f}–{max(ratios):.2f}×" if ratios else "—"

    lines = [
        f"WAL / plain in each of the {len(runs)} runs, lowest–highest (the noise band of the "
        "medians above: no syncsvc code runs in either table's statements):",
        "",
        "| statement | single-row wall | single-row CPU | bulk wall | bulk CPU |",
        "|---|---:|---:|---:|---:|",
    ]
    for statement in runs[0]["single"]:
        cells = [band(p, statement, k) for p in ("single", "bulk") for k in ("wall", "cpu")]
        lines.append(f"| {statement} | {' | '.join(cells)} |")
    return "\n".join(lines)
