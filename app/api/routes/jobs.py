"""Training jobs: start one (202), watch its progress, cancel it."""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, HTTPException, Query

from app.api.deps import JobsDep, KeyDep
from app.api.schemas import JobOut, TrainRequest
from app.services.jobs import JobRecord, JobSpec

router = APIRouter(tags=["training"])


def _out(r: JobRecord) -> JobOut:
    return JobOut(**dataclasses.asdict(r))


@router.post("/train", status_code=202, response_model=JobOut, dependencies=[KeyDep],
             responses={401: {"description": "API key missing or wrong"},
                        422: {"description": "bad market, range or hyper-parameters"}})
async def train(body: TrainRequest, jobs: JobsDep) -> JobOut:
    """Queue a training job; it runs in a worker process while the service keeps serving."""
    spec = JobSpec(exchange=body.exchange, symbol=body.symbol, start=body.start, end=body.end,
                   config=body.config.model_dump(), activate=body.activate)
    try:
        record = jobs.submit(spec)
    except ValueError as e:
        raise HTTPException(422, str(e)) from e
    return _out(record)


@router.get("/jobs", response_model=list[JobOut])
async def list_jobs(jobs: JobsDep, limit: int = Query(100, ge=1, le=1000)) -> list[JobOut]:
    return [_out(r) for r in jobs.list(limit)]


@router.get("/jobs/{job_id}", response_model=JobOut, responses={404: {"description": "no such job"}})
async def get_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Status, live progress (epoch, batch, loss, validation metrics) and the result."""
    return _out(jobs.get(job_id))


@router.delete("/jobs/{job_id}", response_model=JobOut, dependencies=[KeyDep],
               responses={404: {"description": "no such job"},
                          409: {"description": "the job has already finished"}})
async def cancel_job(job_id: str, jobs: JobsDep) -> JobOut:
    """Cancel a queued or running job; a running one stops within a few seconds."""
    record = jobs.get(job_id)
    if record.status not in ("queued", "running"):
        raise HTTPException(409, f"job {job_id} is already {record.status}")
    return _out(jobs.cancel(job_id))
