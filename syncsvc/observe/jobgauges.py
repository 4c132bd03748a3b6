"""The re-embedding job gauges (set by the web service next to ``metrics.refresh``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from prometheus_client import Gauge

from syncsvc.observe.registry import REGISTRY

JOB_PROGRESS = Gauge(
    "syncsvc_job_progress_ratio",
    "Fraction of a re-embedding job's rows done.",
    ["job", "target", "state"],
    registry=REGISTRY,
)
JOB_ROWS = Gauge(
    "syncsvc_job_rows",
    "Rows of a re-embedding job by kind (total, done).",
    ["job", "kind"],
    registry=REGISTRY,
)


class JobProgress(Protocol):
    """What the job gauges show of a job (``syncsvc.web.jobs.JobView``)."""

    @property
    def id(self) -> int: ...
    @property
    def target(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def progress(self) -> float: ...
    @property
    def total(self) -> int | None: ...
    @property
    def done(self) -> int: ...


def record_jobs(jobs: Iterable[JobProgress]) -> None:
    """Set the job gauges to ``jobs``."""
    JOB_PROGRESS.clear()
    JOB_ROWS.clear()
    for job in jobs:
        JOB_PROGRESS.labels(str(job.id), job.target, job.state).set(job.progress)
        JOB_ROWS.labels(str(job.id), "total").set(job.total or 0)  # 0 until counted
        JOB_ROWS.labels(str(job.id), "done").set(job.done)
