"""Training jobs: start one (202), watch its progress, cancel it.

The routes are plain `def`: FastAPI runs them in its thread pool, so a job store that
is slow to answer (another writer holding its lock) never holds up the event loop
that serves /predict. A full queue is 429 and a store that cannot record the job
503, both with Retry-After; neither records anything.
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, HTTPException, Query

from app.api.deps import JobsDep, KeyDep
from app.api.schemas import JobOut, TrainRequest
from app.services.jobs import JobRecord, JobSpec, QueueFull, StoreUnavailable

router = APIRouter(tags=["training"])


def _out(r: JobRecord) -> JobOut:
    return JobOut(**dataclasses.asdict(r))


def _refused(status: int, e: QueueFull | StoreUnavailable) -> HTTPException:
    return HTTPException(status, str(e), headers={"Retry-After": str(e.retry_after_s)})


@router.post("/train", status_code=202, response_model=JobOut, dependencies=[KeyDep],
             responses={401: {"description": "API key missing or wrong"},
                        422: {"description": "bad market, range or hyper-parameters"},
                        429: {"description": "the queue is full (TICKCAST_JOB_QUEUE_MAX); see "
                                             "Retry-After"},
                        503: {"description": "the job store cannot record the job; see Retry-After"}})
def train(body: TrainRequest, jobs: JobsDep) -> JobOut:
    """Queue a training job; it runs in a worker process while the service keeps serving."""
    spec = JobSpec(exchange=body.exchange, symbol=body.symbol, start=body.start, end=body.end,
                   config=body.config.model_dump(), activate=body.activate)
    try:
        record = jobs.submit(spec)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    except QueueFull as e:
        raise _refused(429, e) from e
    except StoreUnavailable as e:
        raise _refused(503, e) from e
    return _out(record)


@router.get("/jobs", response_model=list[JobOut],
            responses={503: {"description": "the job store cannot be read; see Retry-After"}})
def list_jobs(jobs: JobsDep, limit: int = Query(100, ge=1, le=1000)) -> list[JobOut]:
    try:
        return [_out(r) for r in jobs.list(limit)]
    except StoreUnavailable as e:
        raise _refused(503, e) from e


@router.get("/jobs/{job_id}", response_model=JobOut,
            responses={404: {"description": "no such job"},
                       503: {"description": "the job store cannot be read; see Retry-After"}})
def get_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Status, live progress (epoch, batch, loss, validation metrics) and the result."""
    try:
        return _out(jobs.get(job_id))
    except StoreUnavailable as e:
        raise _refused(503, e) from e


@router.delete("/jobs/{job_id}", response_model=JobOut, dependencies=[KeyDep],
               responses={404: {"description": "no such job"},
                          409: {"description": "the job has already finished"},
                          503: {"description": "the job store cannot be read; see Retry-After"}})
def cancel_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Cancel a queued or running job; a running one stops within a few seconds."""
    try:
        record = jobs.get(job_id)
        if record.status not in ("queued", "running"):
            raise HTTPException(409, f"job {job_id} is already {record.status}")
        return _out(jobs.cancel(job_id))
    except StoreUnavailable as e:
        raise _refused(503, e) from e
