"""The child-process side of a training job: load ticks, fit, save, score against the incumbent.

`run()` is the target of a "spawn" process, so it starts from a fresh
interpreter (no forked torch or asyncio state) and talks to the parent only
through a multiprocessing Queue of small tuples `(kind, payload)`:

- `("progress", dict)`: phase, epoch, batch, loss, validation metrics, elapsed_s
- `("result", dict)`: model_id, metrics, challenger/incumbent validation AUC
- `("cancelled", str)`, `("failed", str)`: a message a person can act on

The parent decides promotion; this side never touches the ACTIVE file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

BATCH_MESSAGES_PER_S = 4.0
POLICIES = ("never", "always", "if_better")


@dataclass(frozen=True)
class JobSpec:
    exchange: str
    symbol: str
    start: float | None
    end: float | None
    config: dict[str, Any]
    activate: Literal["never", "always", "if_better"] = "if_better"
    synthetic_ticks: int = 60_000


def validate_spec(spec: JobSpec) -> dict[str, Any]:
    """The spec as a JSON-able dict, or ValueError saying what to fix."""
    for name in ("exchange", "symbol"):
        v = getattr(spec, name)
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f"{name} must be a non-empty string")
    for name in ("start", "end"):
        v = getattr(spec, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)
                              or v != v or abs(v) == float("inf")):
            raise ValueError(f"{name} must be a finite number of unix seconds or null")
    if spec.start is not None and spec.end is not None and spec.end <= spec.start:
        raise ValueError("end must be after start")
    if spec.activate not in POLICIES:
        raise ValueError(f"activate must be one of {', '.join(POLICIES)}, got {spec.activate!r}")
    n = spec.synthetic_ticks
    if isinstance(n, bool) or not isinstance(n, int) or not 100 <= n <= 10_000_000:
        raise ValueError(f"synthetic_ticks must be an integer in [100, 10000000], got {n!r}")
    if not isinstance(spec.config, dict):
        raise ValueError("config must be an object of training settings")
    from app.ml.training import TrainConfig

    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(spec.config) - known)
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))}")
    try:
        cfg = TrainConfig(**spec.config)
    except TypeError as e:
        raise ValueError(f"bad training settings: {e}") from e
    if cfg.train_split + cfg.val_split > 1:
        raise ValueError("train_split + val_split must be <= 1")
    out = asdict(spec)
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise ValueError(f"the job spec must be plain finite JSON values: {e}") from e
    return out


class _Stopped(Exception):
    pass


def run(spec: dict[str, Any], store_path: str | None, models_dir: str, threads: int,
        queue: Any, stop: Any) -> None:
    """Entry point of the worker process; every outcome is one final message on `queue`."""
    # Ctrl-C reaches the whole process group: the parent decides what happens to its jobs.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def should_stop() -> bool:
        return stop.is_set() or os.getppid() != parent  # orphaned: the service died

    try:
        queue.put(("result", _train(spec, store_path, models_dir, threads, queue, should_stop)))
    except _Stopped as e:
        queue.put(("cancelled", str(e) or "cancelled"))
    except Exception as e:  # reported as the job's error; the traceback goes to the log only
        from app.ml.training import TrainingCancelled

        if isinstance(e, TrainingCancelled):
            queue.put(("cancelled", str(e)))
            return
        if not isinstance(e, (ValueError, LookupError, OSError)):
            log.exception("training job failed")
        msg = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
        queue.put(("failed", msg.strip() or type(e).__name__))


def _train(spec: dict[str, Any], store_path: str | None, models_dir: str, threads: int,
           queue: Any, should_stop: Any) -> dict[str, Any]:
    t0 = time.perf_counter()

    def phase(name: str) -> None:
        if should_stop():
            raise _Stopped(f"cancelled while {name}")
        queue.put(("progress", {"phase": name, "elapsed_s": round(time.perf_counter() - t0, 3)}))

    phase("loading data")
    import torch

    torch.set_num_threads(max(1, int(threads)))
    from app.ml import evaluation, training
    from app.services.registry import Registry

    config = dict(spec["config"])
    config["num_threads"] = max(1, int(threads))
    config.setdefault("progress_every", 5)
    cfg = training.TrainConfig(**config)
    ticks, info = _load_ticks(spec, store_path, cfg.seed)

    last_batch = [0.0]

    def progress(p: training.Progress) -> None:
        now = time.perf_counter()
        if p.kind == "batch":
            if now - last_batch[0] < 1.0 / BATCH_MESSAGES_PER_S:
                return
            last_batch[0] = now
        msg: dict[str, Any] = {"phase": "training", "epoch": p.epoch, "num_epochs": p.num_epochs,
                               "batch": p.batch, "num_batches": p.num_batches,
                               "loss": round(p.loss, 6), "elapsed_s": round(now - t0, 3)}
        if p.val is not None:
            msg["val"] = {k: float(v) for k, v in p.val.items()}
        queue.put(("progress", msg))

    phase("training")
    fitted = training.fit(ticks, cfg, data_info=info, progress=progress, should_stop=should_stop)
    phase("saving")
    path = fitted.save(models_dir)
    try:
        phase("comparing with the active model")
        registry = Registry(models_dir)
        incumbent_id = registry.active_id()
        models, note = [fitted.model], None
        if incumbent_id is not None:
            try:
                models.append(registry.load(incumbent_id, fitted.model.device))
            except Exception as e:  # an unusable incumbent is no reason to lose the new model
                note = f"the active model {incumbent_id} could not be loaded: {e}"
        rows = evaluation.compare(models, ticks, train=cfg.train_split, val=cfg.val_split,
                                  part="val")
        by_name = {r.name: r.scores for r in rows}
        challenger_auc = by_name[fitted.model.id]["auc"]
        incumbent_auc = by_name[models[1].id]["auc"] if len(models) > 1 else None
        if should_stop():
            raise _Stopped("cancelled after training")
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    meta = fitted.meta
    return {
        "model_id": fitted.model.id,
        "metrics": meta["metrics"],
        "challenger_val_auc": _num(challenger_auc),
        "incumbent_id": incumbent_id,
        "incumbent_val_auc": _num(incumbent_auc),
        "incumbent_note": note,
        "baselines": {r.name: _num(r.scores.get("auc")) for r in rows[: len(rows) - len(models)]},
        "best_epoch": meta.get("best_epoch"),
        "epochs": meta.get("epochs"),
        "stop_reason": fitted.stop_reason,
        "train_seconds": round(float(meta.get("train_seconds", 0.0)), 3),
        "n_ticks": len(ticks),
    }


def _num(v: Any) -> float | None:
    return None if v is None else float(v)


def _load_ticks(spec: dict[str, Any], store_path: str | None, seed: int) -> tuple[Any, dict]:
    from app.market.ticks import TickArrays

    exchange, symbol, start, end = spec["exchange"], spec["symbol"], spec["start"], spec["end"]
    ticks = TickArrays.empty()
    if store_path is not None and Path(store_path).is_file():
        from app.market.store import TickStore

        with TickStore(store_path) as store:
            ticks = store.read(exchange, symbol, start=start, end=end, ids=False)
    info: dict[str, Any] = {"source": "store", "exchange": exchange, "symbol": symbol,
                            "start": start, "end": end}
    if len(ticks) == 0 and exchange == "synthetic":
        from app.market.sources import synthetic

        ticks = synthetic.generate(int(spec["synthetic_ticks"]), seed=seed)
        info = {"source": "synthetic", "exchange": exchange, "symbol": symbol, "seed": seed}
    if len(ticks) == 0:
        where = "in that range" if start is not None or end is not None else "in the store"
        raise ValueError(f"no ticks for {exchange}:{symbol} {where}; pull or import ticks first")
    return ticks, info
