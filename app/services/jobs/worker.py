"""The child-process side of a training job: load ticks, fit, save, score against the incumbent.

`run()` is the target of a "spawn" process, so it starts from a fresh
interpreter (no forked torch or asyncio state) and talks to the parent only
through a multiprocessing Queue of small tuples `(kind, payload)`:

- `("progress", dict)`: phase, epoch, batch, loss, validation metrics, elapsed_s
- `("saved", str)`: the id of the model file just written (claimed by the job even
  if this process dies before its result)
- `("result", dict)`: model_id, metrics, challenger/incumbent validation AUC, and for a
  stored market the gaps its ticks were cut at (`gaps`, `gap_windows_removed`)
- `("cancelled", str)`, `("failed", str)`: a message a person can act on

What a job is asked to do (`JobSpec`) and whether it can be queued are `jobs.spec`'s.

The parent decides promotion; this side never touches the ACTIVE file, and
it never writes to the store: a store that cannot be read for a moment (a
lock, a disk hiccup) is retried with backoff rather than failing a healthy run.

Training is background work (`yield_cpu`): the lowest CPU priority there is
(SCHED_IDLE on Linux, else nice 10), off the first CPU when there are more,
and its torch, OpenMP and BLAS thread pools capped, so that on a small
machine /predict keeps its core while a job trains. It exits with the API
process however that dies (`lifeline.arm`), so no worker outlives it.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.database import is_postgres, redact
from app.services.jobs.spec import market_words, more_ticks

if TYPE_CHECKING:  # the worker process imports torch (through app.ml) only after yield_cpu
    from app.market.ticks import TickArrays
    from app.ml.config import TrainConfig
    from app.ml.training import FitResult, Progress
    from app.services.registry import Registry

log = logging.getLogger(__name__)

BATCH_MESSAGES_PER_S = 4.0
NICE = 10  # as ingestion's worker: the API process wins the CPU when both want it
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
STORE_RETRY_S = 60.0  # how long a store that cannot be read is retried before the job fails
STORE_RETRY_MAX_DELAY_S = 5.0


class _Stopped(Exception):
    pass


class StoreUnreadable(Exception):
    """The tick store stayed unreadable for `STORE_RETRY_S`; the message says what to check."""


def yield_cpu(threads: int) -> None:
    """Make training background work, before torch is imported (OpenMP and BLAS read their
    variables once, when they start; threads started later inherit the rest).

    - Linux's SCHED_IDLE (else nice 10): a request that wakes the API process preempts
      training at once. Nice alone was not enough: a nice 10 trainer sharing the server's
      core still ran out its slice first, and /predict's p99 at one connection went from
      1 ms to 5 ms;
    - off the first CPU the process may use, when it may use more than one: serving keeps
      a core to itself (with both on every core, the server's wake-ups kept landing beside
      the trainer and p99 at one connection tripled);
    - thread pools capped at `threads`.
    """
    try:
        os.nice(NICE)
    except OSError:  # not permitted here: run at normal priority
        pass
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError:
            pass
    if hasattr(os, "sched_getaffinity"):
        cpus = os.sched_getaffinity(0)
        if len(cpus) > 1:
            try:
                os.sched_setaffinity(0, cpus - {min(cpus)})
            except OSError:
                pass
    for var in THREAD_VARS:
        os.environ[var] = str(max(1, int(threads)))


def run(
    spec: dict[str, Any],
    store_path: str | None,
    models_dir: str,
    threads: int,
    queue: Any,
    stop: Any,
    job_id: str | None = None,
    parent_pid: int | None = None,
    gap_s: float = 300.0,
) -> None:
    """Entry point of the worker process; every outcome is one final message on `queue`.
    `gap_s`: seconds without a trade that cut a stored market's ticks into series."""
    from app.services import lifeline

    lifeline.arm(parent_pid)  # first: a worker must not outlive the API process, kill -9 included
    # Ctrl-C (and a service manager's SIGTERM) reaches the whole process group: the parent decides
    # what happens to its jobs (stopped and recorded interrupted, not seen dying and recorded failed).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    yield_cpu(threads)
    parent = parent_pid if parent_pid is not None else os.getppid()

    def should_stop() -> bool:
        return stop.is_set() or os.getppid() != parent  # orphaned: the service died

    try:
        result = _train(spec, store_path, models_dir, threads, queue, should_stop, job_id, gap_s=gap_s)
        queue.put(("result", result))
    except _Stopped as e:
        queue.put(("cancelled", str(e) or "cancelled"))
    except Exception as e:  # reported as the job's error; the traceback goes to the log only
        from app.ml.training import TrainingCancelled

        if isinstance(e, TrainingCancelled):
            queue.put(("cancelled", str(e)))
            return
        if not isinstance(e, (ValueError, LookupError, OSError, StoreUnreadable)):
            log.exception("training job failed")
        msg = str(e) if isinstance(e, (ValueError, StoreUnreadable)) else f"{type(e).__name__}: {e}"
        queue.put(("failed", msg.strip() or type(e).__name__))


def _train(
    spec: dict[str, Any],
    store_path: str | None,
    models_dir: str,
    threads: int,
    queue: Any,
    should_stop: Any,
    job_id: str | None = None,
    *,
    gap_s: float = 300.0,
) -> dict[str, Any]:
    t0 = time.perf_counter()

    def phase(name: str) -> None:
        if should_stop():
            raise _Stopped(f"cancelled while {name}")
        queue.put(("progress", {"phase": name, "elapsed_s": round(time.perf_counter() - t0, 3)}))

    phase("loading data")
    cfg = _worker_config(spec, threads)
    from app.ml import training

    ticks, info = _load_ticks(spec, store_path, cfg.seed, should_stop)
    # checked at submission too, but the store may have changed since (or the job came from elsewhere)
    ranged = spec["start"] is not None or spec["end"] is not None
    where = market_words(spec["exchange"], spec["symbol"], spec["start"], spec["end"])
    todo = more_ticks(spec["exchange"], spec["symbol"], ranged)
    training.check_enough_ticks(len(ticks), cfg, what=where, todo=todo)
    series, cuts = _series(ticks, info, cfg, gap_s, where, todo)
    n_ticks = len(ticks)
    del ticks  # the series hold what training reads; the trade ids only found the cuts
    phase("training")
    progress = _progress_sender(queue, t0)
    fitted = _fit(spec)(series, cfg, data_info={**info, **cuts}, progress=progress, should_stop=should_stop)
    phase("saving")
    if job_id is not None:
        fitted.meta.job_id = job_id  # so a restart finds the job's model if its result is lost
    comparison = _save_and_compare(fitted, series, cfg, (models_dir, store_path), queue, phase, should_stop)
    meta = fitted.meta
    return {
        "model_id": fitted.model.id,
        "metrics": {part: {k: _num(v) for k, v in s.items()} for part, s in meta.metrics.items()},
        **comparison,  # challenger_val_auc, incumbent_id, incumbent_val_auc, incumbent_note, baselines
        "best_epoch": meta.best_epoch,
        "epochs": meta.epochs,
        "stop_reason": fitted.stop_reason,
        "train_seconds": round(float(meta.train_seconds or 0.0), 3),
        "n_ticks": n_ticks,
        **{k: cuts.get(k) for k in ("gaps", "gap_windows_removed")},  # null: generated, not cut
        "warnings": list(fitted.warnings),  # e.g. few ticks: metrics too noisy to trust
    }


def _save_and_compare(
    fitted: FitResult,
    series: list[TickArrays],
    cfg: TrainConfig,
    where: tuple[str, str | None],
    queue: Any,
    phase: Callable[[str], None],
    should_stop: Any,
) -> dict[str, Any]:
    """Save the model (`where`: the models folder and the store target) where the service finds it:
    the folder, and with PostgreSQL the database, from whichever machine this worker runs on; then
    score it against the active model. A failure or a cancel on the way takes the model back."""
    from app.services.model_store import open_registry

    models_dir, store_path = where
    registry = open_registry(models_dir, store_path or ":memory:")
    path = fitted.save(models_dir)
    try:
        registry.publish(path)
        queue.put(("saved", fitted.model.id))
        phase("comparing with the active model")
        comparison = _compare(fitted, series, cfg, registry)
        if should_stop():
            raise _Stopped("cancelled after training")
    except BaseException:
        registry.withdraw(fitted.model.id)
        path.unlink(missing_ok=True)
        raise
    finally:
        registry.close()
    return comparison


def _fit(spec: dict[str, Any]) -> Callable[..., FitResult]:
    """`training.fit`; for a job of `workers` > 1 (the Ray backend), one model trained by that many
    Ray Train workers (`ray_train`, which imports Ray)."""
    from app.ml import training

    workers = int(spec.get("workers", 1))
    if workers == 1:
        return training.fit
    from app.services.jobs.ray_train import data_parallel

    return data_parallel(workers)


def _series(
    ticks: TickArrays, info: dict[str, Any], cfg: TrainConfig, gap_s: float, where: str, todo: str
) -> tuple[list[TickArrays], dict[str, Any]]:
    """A stored market's ticks cut at its gaps, so that no window spans one, and what the cuts
    cost (for the result and the checkpoint); generated ticks have none, and stay whole."""
    if info["source"] != "store":
        return [ticks], {}
    from app.services.coverage import split_for_training

    split = split_for_training(ticks, cfg, gap_s, what=where, todo=todo)
    return split.series, split.info(gap_s)


def _worker_config(spec: dict[str, Any], threads: int) -> TrainConfig:
    """Torch's thread pools capped at `threads`, and the job's settings with the worker's own:
    its thread count, and progress every 5 batches unless the job says otherwise."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already started
        pass
    from app.ml.config import TrainConfig

    return TrainConfig.from_dict({"progress_every": 5, **spec["config"], "num_threads": max(1, int(threads))})


def _progress_sender(queue: Any, t0: float) -> Callable[[Progress], None]:
    """fit()'s progress as queue messages, batch messages at most BATCH_MESSAGES_PER_S."""
    last_batch = [0.0]

    def progress(p: Progress) -> None:
        now = time.perf_counter()
        if p.kind == "batch":
            if now - last_batch[0] < 1.0 / BATCH_MESSAGES_PER_S:
                return
            last_batch[0] = now
        msg: dict[str, Any] = {"phase": "training", "epoch": p.epoch, "num_epochs": p.num_epochs}
        msg.update(
            batch=p.batch, num_batches=p.num_batches, loss=round(p.loss, 6), elapsed_s=round(now - t0, 3)
        )
        if p.val is not None:
            msg["val"] = {k: float(v) for k, v in p.val.items()}
        queue.put(("progress", msg))

    return progress


def _compare(
    fitted: FitResult, series: list[TickArrays], cfg: TrainConfig, registry: Registry
) -> dict[str, Any]:
    """The new model's validation AUC beside the active model's, and the baselines' scores, all on the
    same windows (those of training's series); an active model that cannot be loaded is noted, not
    fatal."""
    from app.ml import evaluation
    from app.services.coverage import scorable

    incumbent_id = registry.active_id()
    models, note = [fitted.model], None
    if incumbent_id is not None:
        try:
            models.append(registry.load(incumbent_id, fitted.model.device))
        except Exception as e:  # an unusable incumbent is no reason to lose the new model
            note = f"the active model {incumbent_id} could not be loaded: {e}"
    split = (cfg.train_split, cfg.val_split)
    both = scorable(series, models, split)  # series the new model trained on, all of them if no gap
    if not both:
        note = f"the active model {incumbent_id} reads longer windows than the stretches between gaps hold"
        models, both = models[:1], series
    # the baselines were fitted on these very windows when the model was: no second tree
    rows = evaluation.compare(models, both, split=split, part="val", with_baselines=False).rows
    by_name = {r.name: r.scores for r in rows}
    return {
        "challenger_val_auc": _num(by_name[fitted.model.id]["auc"]),
        "incumbent_id": incumbent_id,
        "incumbent_val_auc": _num(by_name[models[1].id]["auc"]) if len(models) > 1 else None,
        "incumbent_note": note,
        # per split, every reference's scores (the tree's among them), on the model's own windows
        "baselines": {
            part: {name: {k: _num(v) for k, v in s.items()} for name, s in rows.items()}
            for part, rows in fitted.meta.baselines.items()
        },
    }


def _read_store(
    store_path: str, exchange: str, symbol: str, start: float | None, end: float | None, should_stop: Any
) -> TickArrays:
    """The market's ticks, retrying with backoff while the store is locked or failing (a
    writer holding it, a disk hiccup): a few seconds of trouble must not fail a job."""
    from app.market.backends import open_tick_store, store_errors

    delay, deadline = 0.25, time.monotonic() + STORE_RETRY_S
    while True:
        try:
            store = open_tick_store(store_path)
            try:  # with the ids: missing ones cut the series too
                return store.read(exchange, symbol, start=start, end=end)
            finally:
                store.close()
        except store_errors(store_path) as e:  # "database is locked", "disk I/O error", ...
            if time.monotonic() + delay > deadline:
                raise StoreUnreadable(
                    f"the tick store {redact(store_path)} could not be read for {STORE_RETRY_S:.0f} s "
                    f"({e}); check its disk, permissions and other processes holding it, then "
                    "submit the job again"
                ) from e
            log.warning("tick store %s not readable (%s); retrying in %.1f s", redact(store_path), e, delay)
        if should_stop():
            raise _Stopped("cancelled while loading data")
        time.sleep(delay)
        delay = min(delay * 2, STORE_RETRY_MAX_DELAY_S)


def _num(v: Any) -> float | None:
    """A score as strict JSON: undefined (None, NaN: the base rate's NPV) is null."""
    return None if v is None or not math.isfinite(float(v)) else float(v)


def _load_ticks(
    spec: dict[str, Any], store_path: str | None, seed: int, should_stop: Any = lambda: False
) -> tuple[TickArrays, dict[str, Any]]:
    from app.market.ticks import TickArrays

    exchange, symbol, start, end = spec["exchange"], spec["symbol"], spec["start"], spec["end"]
    ticks = TickArrays.empty()
    if store_path is not None and (is_postgres(store_path) or Path(store_path).is_file()):
        ticks = _read_store(store_path, exchange, symbol, start, end, should_stop)
    info: dict[str, Any] = {"source": "store", "exchange": exchange, "symbol": symbol}
    info.update(start=start, end=end)
    if len(ticks) == 0 and exchange == "synthetic":
        from app.market.sources import synthetic

        ticks = synthetic.generate(int(spec["synthetic_ticks"]), seed=seed)
        info = {"source": "synthetic", "exchange": exchange, "symbol": symbol, "seed": seed}
    if len(ticks) == 0:
        where = "in that range" if start is not None or end is not None else "in the store"
        raise ValueError(f"no ticks for {exchange}:{symbol} {where}; pull or import ticks first")
    return ticks, info
