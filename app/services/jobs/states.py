"""The words a training job's life is told in: its status and its activation policy.

Both are `StrEnum`s so that a record read from the store, a JSON body and a
Prometheus label all carry the same plain string ("succeeded", "if_better"),
while the code compares against a name the type checker knows.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the service stopped (or its worker died) before the job recorded a result

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.INTERRUPTED}
)


class Activation(StrEnum):
    """What becomes of a finished job's model: never active, always, only if its validation
    AUC beats the active model's on the same data, or (if_better_live) scored in shadow on live
    ticks and activated when a paired test on its live log loss says it is better."""

    NEVER = "never"
    ALWAYS = "always"
    IF_BETTER = "if_better"
    IF_BETTER_LIVE = "if_better_live"
