"""The gauges of WAL capture's replication slot: the WAL it keeps on the server and how far
behind the WAL it is (``status`` shows the same figures, from ``status.collect``)."""

from __future__ import annotations

from prometheus_client import Gauge

from syncsvc.core.types import AsyncConn
from syncsvc.observe import status
from syncsvc.observe.registry import REGISTRY

SLOT_RETAINED = Gauge(
    "syncsvc_wal_slot_retained_bytes",
    "WAL the server keeps for syncsvc's replication slot (from its restart_lsn); it grows "
    "while no daemon reads the slot, up to max_slot_wal_keep_size.",
    ["slot"],
    registry=REGISTRY,
)
SLOT_LAG = Gauge(
    "syncsvc_wal_slot_lag_bytes",
    "WAL written since the last change syncsvc stored from its slot (confirmed_flush_lsn).",
    ["slot"],
    registry=REGISTRY,
)
SLOT_LOST = Gauge(
    "syncsvc_wal_slot_lost",
    "1 while WAL targets exist and their slot is missing or invalidated (they are paused).",
    ["slot"],
    registry=REGISTRY,
)


async def refresh(conn: AsyncConn, rows: list[status.TargetStatus]) -> None:
    """Set the slot gauges (none when no target captures from the WAL)."""
    for gauge in (SLOT_RETAINED, SLOT_LAG, SLOT_LOST):
        gauge.clear()
    if not any(r.capture == "wal" for r in rows):
        return
    slot = await status.wal_slot(conn)
    SLOT_LOST.labels(slot.slot).set(0 if slot.usable else 1)
    SLOT_RETAINED.labels(slot.slot).set(slot.retained_bytes or 0)
    SLOT_LAG.labels(slot.slot).set(slot.lag_bytes or 0)
