"""Re-embedding jobs: the job model (``model``), requesting one (``reembed``), what admins do
to a running one (``control``), and the daemon's backfill runner that feeds them (``backfill``,
not imported here). This package re-exports the first three: ``syncsvc.jobs.request_reembed``.
"""

from syncsvc.jobs.control import (
    cancel_job,
    fail_job,
    give_back,
    lock_job,
    pause_job,
    resume_job,
    set_state,
)
from syncsvc.jobs.model import BACKFILL_PRIORITY, Estimate, Job, JobState, get_job, list_jobs
from syncsvc.jobs.reembed import (
    ASSUMED_LATENCY,
    ESTIMATE_SAMPLE_ROWS,
    embedding_seconds,
    estimate,
    options_with_sparse,
    request_reembed,
    resolve_model,
)

__all__ = [
    "ASSUMED_LATENCY",
    "BACKFILL_PRIORITY",
    "ESTIMATE_SAMPLE_ROWS",
    "Estimate",
    "Job",
    "JobState",
    "cancel_job",
    "embedding_seconds",
    "estimate",
    "fail_job",
    "get_job",
    "give_back",
    "list_jobs",
    "lock_job",
    "options_with_sparse",
    "pause_job",
    "request_reembed",
    "resolve_model",
    "resume_job",
    "set_state",
]
