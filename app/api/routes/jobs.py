"""Training jobs: start one (202), watch its progress, cancel it.

The routes are plain `def`: FastAPI runs them in its thread pool, so a job store that
is slow to answer (another writer holding its lock) never holds up the event loop
that serves /predict. A full queue is 429 and a store that cannot record the job
503, both with Retry-After; neither records anything.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.api.deps import JobsDep, KeyDep
from app.api.openapi import responses
from app.api.schemas import JobOut, TrainRequest
from app.services.jobs.manager import JobRecord, JobSpec
from app.services.jobs.states import Activation

router = APIRouter(tags=["training"])

_STORE_DOWN = (
    503,
    "the job store cannot be read or written (locked, unwritable, full); nothing was "
    "changed, see Retry-After",
    "the job store is locked by another writer; nothing was recorded, retry in 5 s",
)
_NO_JOB = (404, "no such job", "no job '3f9c2a7d41b0'; GET /jobs lists the jobs")
JobId = Annotated[
    str,
    Path(description="the job's id, 12 hex digits, as POST /train answered it", examples=["3f9c2a7d41b0"]),
]


def _out(r: JobRecord) -> JobOut:
    return JobOut(**dataclasses.asdict(r))


@router.post(
    "/train",
    status_code=202,
    response_model=JobOut,
    dependencies=[KeyDep],
    summary="Start a training job",
    responses=responses(
        (400, "the body could not be read as JSON text (cut off, or not UTF-8)"),
        401,
        (
            422,
            "a bad market name, range or hyper-parameter, or a market without enough ticks "
            "to train on; nothing was queued",
        ),
        (429, "the queue is full (TICKCAST_JOB_QUEUE_MAX); nothing was queued, see Retry-After"),
        _STORE_DOWN,
        500,
    ),
)
def train(body: TrainRequest, jobs: JobsDep) -> JobOut:
    """Queue a training job on a market's stored ticks; it runs in a worker process while the
    service keeps serving. Follow it with GET /jobs/{job_id}; `activate` decides whether its
    model replaces the active one."""
    spec = JobSpec(
        exchange=body.exchange,
        symbol=body.symbol,
        start=body.start,
        end=body.end,
        config=body.config.model_dump(),
        activate=Activation(body.activate),
        workers=body.workers,
    )
    return _out(jobs.submit(spec))  # InvalidJobSpec, QueueFull...: answered by app.api.errors


@router.get(
    "/jobs", response_model=list[JobOut], summary="List training jobs", responses=responses(_STORE_DOWN, 500)
)
def list_jobs(
    jobs: JobsDep,
    limit: int = Query(100, ge=1, le=1000, description="at most this many, newest first"),
) -> list[JobOut]:
    """Every job, newest first, with its status, progress, result or error: queued and running
    ones, and finished ones as the store keeps them."""
    return [_out(r) for r in jobs.list(limit)]


@router.get(
    "/jobs/{job_id}",
    response_model=JobOut,
    summary="One training job",
    responses=responses(_NO_JOB, _STORE_DOWN, 500),
)
def get_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    """Status, live progress (epoch, batch, loss, validation metrics) and the result."""
    return _out(jobs.get(job_id))


@router.delete(
    "/jobs/{job_id}",
    response_model=JobOut,
    dependencies=[KeyDep],
    summary="Cancel a job",
    responses=responses(
        401,
        _NO_JOB,
        (409, "the job has already finished", "job 3f9c2a7d41b0 is already succeeded"),
        _STORE_DOWN,
        500,
    ),
)
def cancel_job(job_id: JobId, jobs: JobsDep) -> JobOut:
    """Cancel a queued or running job; a running one stops within a few seconds. Answers the
    job as it is now (`cancel_requested` in its progress while it stops)."""
    return _out(jobs.cancel(job_id))  # a finished job: JobFinished, answered 409 by app.api.errors
