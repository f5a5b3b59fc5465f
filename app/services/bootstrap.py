"""First start: no model anywhere, so make one from the synthetic market.

A fresh machine with no network and no configuration should serve real
predictions within a minute: the store is filled with the live synthetic
market's history up to now (by the ingestor, so later pulls continue the
same path) and a job training the default model is queued that activates its
result: the first start serves what `/train` with no settings would make.

That minute must not be silent: `follow` logs the job's progress (epoch,
batch, validation AUC) every few seconds, and keeps the reason /ready and
/predict give in their 503 current, with a retry delay that is the one their
Retry-After header says.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from app.ml.config import DEFAULTS
from app.services.jobs.manager import JobManager, JobRecord, JobSpec
from app.services.jobs.states import FINISHED, Activation, JobStatus
from app.services.no_model import NoModel, NoModelReason, Remedy
from app.services.registry import Registry

if TYPE_CHECKING:
    from app.services.ingestion.scheduler import Ingestor
    from app.services.predictor import Predictor

log = logging.getLogger(__name__)

BOOTSTRAP_CONFIG: dict[str, Any] = {}  # the defaults: the model /train makes unless told otherwise
SYNTHETIC_SECONDS_PER_TICK = 4.66  # the synthetic market's mean gap, as on the Bitstamp file
POLL_S = 1.0  # how often the job is looked at
QUIET_S = 5.0  # at most one line per this many seconds while only the batch count moves


def needed(registry: Registry) -> bool:
    """No model at all: neither an active one nor any loadable one in the folder to activate.

    An ACTIVE naming an unloadable model is an operator's choice to fix (/ready says how), not a
    first start: training would silently replace it."""
    return registry.active_id() is None and not any(m.loadable for m in registry.list())


async def fill(ingestor: Ingestor, symbol: str, n_ticks: int) -> int:
    """Store the synthetic market's recent history (about `n_ticks` ticks); how many were stored."""
    log.info(
        "bootstrap: no model yet; storing about %s ticks of synthetic:%s's history to train a first one on",
        f"{n_ticks:,}",
        symbol,
    )
    t0 = time.perf_counter()
    filled = await ingestor.fill_synthetic(symbol)
    log.info(
        "bootstrap: stored %s synthetic ticks in %.1f s", f"{filled.new_ticks:,}", time.perf_counter() - t0
    )
    return filled.new_ticks


def queue_first_job(jobs: JobManager, symbol: str) -> JobRecord | None:
    """The first model's job, or None (logged, with what to do) when it cannot be queued: the
    service still starts, answering 503 with the reason until a model is trained or activated."""
    try:
        job = jobs.submit(
            JobSpec(
                exchange="synthetic",
                symbol=symbol,
                start=None,
                end=None,
                config=dict(BOOTSTRAP_CONFIG),
                activate=Activation.ALWAYS,
            )
        )
    except Exception as e:
        log.error(
            "bootstrap: could not queue a first model's training: %s; train one with POST /train "
            "or `tickcast train`",
            e,
        )
        return None
    log.info(
        "bootstrap: training a first model in job %s (%s, %d epochs)",
        job.id,
        BOOTSTRAP_CONFIG.get("arch", DEFAULTS.arch),
        BOOTSTRAP_CONFIG.get("num_epochs", DEFAULTS.num_epochs),
    )
    return job


def follow(jobs: JobManager, job: JobRecord, predictor: Predictor) -> asyncio.Task[None]:
    """Log the first model's progress until its job ends, keeping `predictor.training_hint` (the
    503's reason) current. Cancel the task at shutdown; it ends quietly."""
    predictor.training_hint = hint(job.id, job.progress)
    return asyncio.create_task(_follow(jobs, job.id, predictor), name="bootstrap-progress")


def hint(job_id: str, progress: dict[str, Any] | None) -> NoModelReason:
    """The 503's reason while the first model trains; its retry delay is the Retry-After sent."""
    p = progress or {}
    where = f", epoch {p['epoch']}/{p['num_epochs']}" if p.get("epoch") else ""
    return NoModelReason(
        f"a first model is training (job {job_id}{where}); retry in {NoModel.retry_after_s} s"
    )


def describe(rec: JobRecord) -> str | None:
    """One line for the log: where the job is; None at an epoch's end (`epoch_done` says it)."""
    p = rec.progress or {}
    if rec.status == JobStatus.QUEUED:
        return "waiting for a training worker"
    if p.get("phase") != "training" or "epoch" not in p:
        return str(p.get("phase") or "starting a training worker")  # (loading data is not relayed)
    if p.get("batch") == p.get("num_batches"):
        return None
    return (
        f"epoch {p['epoch']}/{p['num_epochs']}, batch {p.get('batch', 0)}/{p.get('num_batches', '?')}, "
        f"loss {p.get('loss', 0.0):.4f}"
    )


def epoch_done(progress: dict[str, Any] | None) -> tuple[int, float | None] | None:
    """(the last finished epoch, its validation AUC) as far as `progress` tells, or None. The
    progress keeps the last epoch's `val` while the next one's batches run."""
    p = progress or {}
    if not p.get("epoch") or p.get("val") is None:
        return None
    finished = (
        p["epoch"]
        if p.get("batch") == p.get("num_batches") or p.get("phase") != "training"
        else p["epoch"] - 1
    )
    auc = p["val"].get("auc")
    return finished, auc if isinstance(auc, float) else None


async def _follow(jobs: JobManager, job_id: str, predictor: Predictor) -> None:
    t0 = time.monotonic()
    last_line, last_key, last_at, last_done = "", None, 0.0, 0
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            try:
                rec = await asyncio.to_thread(jobs.get, job_id)
            except Exception as e:
                log.debug("bootstrap: job %s not readable now: %s", job_id, e)
                await asyncio.sleep(POLL_S)
                continue
            p, now = rec.progress or {}, time.monotonic()
            done = epoch_done(p)
            if done is not None and done[0] > last_done:  # once per epoch (a short one may be missed)
                last_done = done[0]
                auc = "" if done[1] is None else f", validation AUC {done[1]:.3f}"
                log.info("bootstrap: job %s: epoch %d/%d done%s", job_id, done[0], p["num_epochs"], auc)
            if rec.status in FINISHED:
                _finished(rec, predictor, now - t0)
                return
            line = describe(rec)
            key = (rec.status, p.get("phase"), p.get("epoch"))
            if line is not None and line != last_line and (key != last_key or now - last_at >= QUIET_S):
                log.info("bootstrap: job %s: %s", job_id, line)
                last_line, last_key, last_at = line, key, now
                predictor.training_hint = hint(job_id, p)
            await asyncio.sleep(POLL_S)


def _finished(rec: JobRecord, predictor: Predictor, seconds: float) -> None:
    result = rec.result or {}
    if rec.status == JobStatus.SUCCEEDED and result.get("activated"):
        auc = result.get("challenger_val_auc")
        score = f", validation AUC {auc:.3f}" if isinstance(auc, float) else ""
        log.info(
            "bootstrap: the first model %s is active after %.0f s%s; /ready answers 200",
            result.get("model_id"),
            seconds,
            score,
        )
        predictor.training_hint = None
        return
    why = rec.error or result.get("reason") or rec.status
    ended = f"the first model's training ended {rec.status} (job {rec.id}: {why})"
    predictor.training_hint = NoModelReason(ended, Remedy.TRAIN_OR_ACTIVATE)
    log.error(
        "bootstrap: %s; train one with POST /train or activate one with POST /models/{id}/activate", ended
    )
