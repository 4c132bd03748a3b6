"""Work items and states: the vocabulary shared by the queue, the worker and the CLI."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

PkValue = list[Any]
"""A primary key as stored in the queue: a JSON array of the key columns' values."""

HASH_SEPARATOR = "\x1f"
# How a target paused by its provider's refusal starts its reason: the probe resumes only those,
# and the admin page calls them "provider down".
PROVIDER_PAUSE = "provider refused requests: "

# The dimension of every stored sparse vector (token ids index it): a reply naming an index
# outside it is refused as a bad reply, never met first by the write.
SPARSE_DIMENSIONS = 1_000_000


class QueueState(StrEnum):
    PENDING = "pending"
    IN_FLIGHT = "in_flight"
    FAILED = "failed"


class GenerationState(StrEnum):
    BUILDING = "building"
    ACTIVE = "active"
    RETIRED = "retired"
    FAILED = "failed"
    """Its job failed: kept for inspection, promoted only with ``--force``."""
    CANCELLED = "cancelled"
    """Its job was cancelled: receives no writes, sends no request; dropped with
    ``syncsvc generation drop`` (or ``jobs cancel --drop``), finished by a new re-embed."""


class Metric(StrEnum):
    COSINE = "cosine"
    INNER_PRODUCT = "ip"
    L2 = "l2"


class Capture(StrEnum):
    """How a target's changes reach the queue."""

    TRIGGERS = "triggers"
    """Statement triggers on the application's table (no server configuration)."""
    WAL = "wal"
    """Logical decoding of the WAL (``wal_level = logical``, a replication slot)."""


class TextType(StrEnum):
    DOCUMENT = "document"
    QUERY = "query"


@dataclass(frozen=True)
class Generation:
    """One vector space of a target: provider family, model, dimensions, space-changing options."""

    id: int
    target_id: int
    key: str
    provider: str
    space: str
    model: str
    dimensions: int
    options: dict[str, Any]
    state: GenerationState
    table_name: str

    @property
    def live(self) -> bool:
        """Live generations receive every edit: the active one and any being built."""
        return self.state in (GenerationState.ACTIVE, GenerationState.BUILDING)

    @property
    def sparse(self) -> bool:
        """Whether the generation also stores DashScope sparse vectors (option ``sparse``)."""
        return bool(self.options.get("sparse"))


@dataclass(frozen=True)
class Target:
    """A registered source table and how its rows become embedding input."""

    id: int
    name: str
    source_schema: str
    source_table: str
    pk_columns: tuple[str, ...]
    pk_types: tuple[str, ...]
    columns: tuple[str, ...]
    template: str
    metric: Metric
    paused_reason: str | None = None
    generations: tuple[Generation, ...] = field(default=())
    embed_labels: bool = False
    """Embed rows whose columns are all empty too, as the template's labels alone."""
    capture: Capture = Capture.TRIGGERS
    """How its changes reach the queue: statement triggers, or the WAL (``capture/wal``)."""

    @property
    def active(self) -> Generation | None:
        return next((g for g in self.generations if g.state is GenerationState.ACTIVE), None)

    @property
    def live_generations(self) -> tuple[Generation, ...]:
        return tuple(g for g in self.generations if g.live)

    @property
    def view_name(self) -> str:
        return f"{self.name}_embeddings"


@dataclass(frozen=True)
class ClaimedItem:
    """A queue entry this worker holds under lease."""

    target_id: int
    pk: PkValue
    seq: int
    attempts: int
    enqueued_at: datetime | None = None
    """When the row's oldest unembedded change was captured (for the lag metric)."""
    priority: int = 0
    """0 for live edits, then sweeps, then re-embedding backfills."""
    holder: str = ""
    """The claiming round (``<worker>/<round>``): completion and failure match on it, so an
    entry a live edit took back from a backfill round is not completed by that round."""


def generation_key(space: str, dimensions: int, options: dict[str, Any]) -> str:
    """Stable identity of a vector space: equal keys mean comparable vectors.

    The space names the model family (``dashscope/text-embedding-v4``), so the model's name at
    a given host is left out: a gateway declared to serve the same space shares the key.
    """
    canonical = json.dumps(
        {"space": space, "dimensions": dimensions, "options": options},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def content_hash(key: str, text: str) -> bytes:
    """Hash of the exact embedding input for one generation (mirrors ``syncsvc.content_hash``)."""
    return hashlib.sha256(f"{key}{HASH_SEPARATOR}{text}".encode()).digest()
