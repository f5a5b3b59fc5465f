"""Jobs whose process died: a worker while the service runs, or the service itself.

A death can fall between any two steps of a job, most awkwardly after the
worker saved its model and before anyone recorded the result. Every model can
be traced to the job that made it (the worker puts the job's id in the
checkpoint's metadata, see `housekeeping`), so what a death left is settled
here rather than lost:

- a worker that exits without a final message: its job fails with what the exit
  code says (an OOM kill says so), and a model it saved is claimed by the job's
  record, never activated (dropped if the job was being cancelled);
- at start, jobs a previous process left `queued`/`running` become
  `interrupted`, and a model such a job saved, or one a finished job never
  recorded, is claimed by that job's record (dropped if the job was cancelled).
  With replicas on one database, only the jobs of replicas that died, at start
  and every few seconds (`shared` says which are dead).
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

from app.services import housekeeping
from app.services.jobs.records import JobTable
from app.services.jobs.states import JobStatus
from app.services.jobs.store import JobRecord, JobStoreError
from app.services.registry import ModelInfo, ModelInUse, Registry, RegistryError

log = logging.getLogger(__name__)

STOPPED_WHILE_RUNNING = "the service stopped while it ran"
STOPPED_BEFORE_START = "the service stopped before the job started"


def after_death(
    registry: Registry, job_id: str, named: str | None, code: int | None, *, user_cancel: bool, stopping: bool
) -> tuple[JobStatus, str, dict[str, Any] | None]:
    """Status, error and result of a job whose worker exited without a final message.

    A model it saved before dying is claimed by the job (or dropped, if it was cancelled):
    the one it `named`, else one whose metadata names the job (it died before saying so)."""
    saved = saved_model(registry, named)
    if saved is None:
        try:
            saved = housekeeping.models_by_job(registry).get(job_id)
        except Exception:  # an unreadable folder: the next start looks again
            log.exception("job %s: could not look for a model it saved", job_id)
    if user_cancel:
        if saved is not None:
            drop_model(registry, saved.id)
        return JobStatus.CANCELLED, "cancelled while it ran (its worker was stopped)", None
    result = None
    if saved is not None:
        advice = housekeeping.not_compared(saved.id)
        result = housekeeping.claimed_result(saved, advice)
    if stopping:
        return JobStatus.INTERRUPTED, STOPPED_WHILE_RUNNING + (f"; {advice}" if result else ""), result
    if saved is None:
        advice = "submit the job again (POST /train)" + (
            ", with fewer ticks or a smaller model if memory is short" if code == -signal.SIGKILL else ""
        )
    return JobStatus.FAILED, f"{death(code)}; {advice}", result


def death(code: int | None) -> str:
    """What a worker's exit code says, for a person."""
    how = "it crashed; the service log has its traceback"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        how = f"killed by {name}"
        if -code == signal.SIGKILL:
            how += " (out of memory? the kernel's OOM killer sends it; `dmesg` tells)"
    return f"worker exited with code {code} before reporting a result: {how}"


def saved_model(registry: Registry, model_id: str | None) -> ModelInfo | None:
    if model_id is None:
        return None
    try:
        return registry.get(model_id)
    except (RegistryError, OSError):
        return None  # never written, or removed by the worker itself (a cancel)


def drop_model(registry: Registry, model_id: str) -> None:
    """Remove the model of a cancelled job; one that is active (activated by hand) is kept."""
    try:
        registry.delete(model_id)
    except ModelInUse:
        log.warning("model %s of a cancelled job is active; kept", model_id)
    except (RegistryError, OSError) as e:
        log.warning("could not remove model %s of a cancelled job: %s", model_id, e)


def settle_left_overs(
    table: JobTable, registry: Registry, mine: set[str], unfinished: Sequence[JobRecord] | None = None
) -> None:
    """Jobs a dead process left queued/running become `interrupted`; a model such a job
    saved (or one a finished job never recorded) is claimed by its record. `mine` are the
    jobs of live processes (this one's, and with replicas those of the live others), left
    alone, models and all. `unfinished`: the records stored queued/running (None: read here)."""
    if unfinished is None:
        try:
            unfinished = table.store.unfinished()
        except JobStoreError as e:
            log.error(
                "could not read the jobs a previous process left unfinished (%s); they "
                "keep their status until the next start",
                e,
            )
            return
    left = [r for r in unfinished if r.id not in mine]
    try:
        saved = housekeeping.models_by_job(registry)
    except Exception:  # an unreadable models folder is no reason not to serve
        log.exception("could not look for models of unfinished jobs")
        saved = {}
    now = time.time()
    for rec in left:
        info = saved.pop(rec.id, None)
        if info is not None:
            rec.result = housekeeping.claimed_result(info, housekeeping.not_compared(info.id))
            rec.error = (
                "the service stopped after the job saved its model, before it recorded "
                f"the result; {housekeeping.not_compared(info.id)}"
            )
            log.warning("job %s: claimed model %s, saved before the service stopped", rec.id, info.id)
        else:
            rec.error = STOPPED_WHILE_RUNNING if rec.status == JobStatus.RUNNING else STOPPED_BEFORE_START
        rec.status, rec.finished_at = JobStatus.INTERRUPTED, now
        table.keep(rec)
    for job_id in [j for j in saved if j in mine]:
        del saved[job_id]
    if saved:
        _claim_for_finished(table, registry, saved)


def _claim_for_finished(table: JobTable, registry: Registry, saved: dict[str, ModelInfo]) -> None:
    """Models whose job finished without recording them: claimed, or dropped if the job
    was cancelled; a job the store does not know keeps its model (another store?)."""
    try:
        records: dict[str, JobRecord] = table.store.by_ids(list(saved))
    except JobStoreError as e:
        log.error("could not match models to their jobs (%s); next start tries again", e)
        return
    for job_id, info in saved.items():
        rec = records.get(job_id)
        if rec is None:
            log.warning(
                "model %s was trained by job %s, which this store does not know "
                "(a different or restored store?); kept",
                info.id,
                job_id,
            )
        elif (rec.result or {}).get("model_id") == info.id:
            continue
        elif rec.status == JobStatus.CANCELLED:
            log.warning("removing model %s: its job %s was cancelled", info.id, job_id)
            drop_model(registry, info.id)
        elif rec.result is None:
            rec.result = housekeeping.claimed_result(info, housekeeping.not_compared(info.id))
            rec.error = (f"{rec.error}; " if rec.error else "") + (
                f"it had saved a model: {housekeeping.not_compared(info.id)}"
            )
            log.warning("job %s (%s): claimed model %s", job_id, rec.status, info.id)
            table.keep(rec)
        else:
            log.warning(
                "model %s names job %s, whose result is model %s; kept",
                info.id,
                job_id,
                rec.result.get("model_id"),
            )
