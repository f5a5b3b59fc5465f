"""What the job manager refuses, and why, in domain words.

Each error carries what a front end needs to say more its own way (the HTTP layer
names its routes and settings): the limit a full queue hit, whether a job id could
be one at all, the record of a job that has already finished.
"""

from __future__ import annotations

from app.services.jobs.records import JOB_ID
from app.services.jobs.store import JobRecord


class UnknownJob(LookupError):
    """No job with that id; `malformed` when the id cannot be one (job ids are 12 hex digits)."""

    def __init__(self, job_id: object) -> None:
        self.malformed = not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id)
        self.job_id = str(job_id)[:40] if self.malformed else str(job_id)
        why = "; job ids are 12 hex digits" if self.malformed else ""
        super().__init__(f"no job {self.job_id!r}{why}")


class QueueFull(RuntimeError):
    """`waiting` jobs wait for a worker, the most the queue takes (`limit`); nothing was queued.
    Retry after `retry_after_s`, or cancel a waiting job."""

    def __init__(self, waiting: int, limit: int, retry_after_s: int) -> None:
        super().__init__(
            f"the training queue is full: {waiting} jobs wait for a worker (at most {limit}); "
            f"nothing was queued; retry in {retry_after_s} s, or cancel a waiting job"
        )
        self.waiting, self.limit, self.retry_after_s = waiting, limit, retry_after_s


class JobFinished(RuntimeError):
    """The job has finished already (`record` as it ended): there is nothing left to cancel."""

    def __init__(self, record: JobRecord) -> None:
        super().__init__(f"job {record.id} is already {record.status}")
        self.record = record
