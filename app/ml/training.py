"""fit(): one training run from ticks to a scored, checkpointable model.

The loop is deliberately plain (nanoGPT-style): build the windows once as a
strided view on the device, gather one batch of window indices at a time, and
keep every per-batch cost other than forward/backward/step negligible, so an
epoch stays close to the compute floor.

The loss is plain log loss: a class-weighted one would only bend the
probabilities for a calibrator to unbend. The best epoch's validation logits fit
a calibrator (`app.ml.calibration`) and choose the threshold (`threshold_rule`);
the test split is scored once, after both, beside the baselines.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from app.market.ticks import TickArrays
from app.ml import baselines, calibration, checkpoint, evaluation, features, metrics, nets
from app.ml.config import TrainConfig
from app.ml.enough import FEW_WINDOWS as FEW_WINDOWS
from app.ml.enough import MIN_WINDOWS as MIN_WINDOWS
from app.ml.enough import TooFewTicks as TooFewTicks
from app.ml.enough import check_enough_ticks as check_enough_ticks
from app.ml.enough import few_ticks_warning
from app.ml.enough import history_of as history_of
from app.ml.enough import ticks_needed as ticks_needed
from app.ml.meta import ModelMeta


class TrainingCancelled(Exception):
    """Raised between batches when `should_stop()` says so; nothing is written after it."""


@dataclass(frozen=True)
class Progress:
    kind: Literal["batch", "epoch"]
    epoch: int  # 1-based
    num_epochs: int
    batch: int  # batches done in this epoch
    num_batches: int
    loss: float  # mean training loss so far this epoch
    elapsed_s: float
    val: dict[str, float] | None = None  # at epoch end


@dataclass
class FitResult:
    model: checkpoint.Model
    meta: ModelMeta
    history: list[dict[str, Any]] = field(default_factory=list)
    stop_reason: str = "completed"
    warnings: list[str] = field(default_factory=list)  # e.g. few ticks: a person should read these

    def save(self, folder: str | Path) -> Path:
        return checkpoint.save(Path(folder) / f"{self.model.id}.pt", self.model.net.state_dict(), self.meta)


def _make_optimizer(cfg: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _better(cfg: TrainConfig, new: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(new)
    return new > best if metrics.HIGHER_IS_BETTER[cfg.monitor] else new < best


@dataclass
class _Run:
    """What one run sets up before its first epoch: data, net, optimiser, and the calibration."""

    cfg: TrainConfig
    device: torch.device
    data: features.WindowedData
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    crit: nn.BCEWithLogitsLoss
    meta: ModelMeta
    base_rate: float  # of the training windows: where an epoch's raw probabilities decide
    warnings: list[str]
    t0: float

    def logits(self, idx: np.ndarray) -> np.ndarray:
        return evaluation.logits_at(self.net, self.data, idx, self.cfg.eval_batch_size)

    def score(self, idx: np.ndarray) -> dict[str, float]:
        """An epoch's validation scores, on its raw (uncalibrated) probabilities."""
        p = 1.0 / (1.0 + np.exp(-self.logits(idx)))
        return metrics.report(self.data.y(idx), p, self.base_rate)


@dataclass
class _Progress:
    """Where the epochs stand: what a resumable file records, and what resuming restores."""

    net_best: dict[str, torch.Tensor]  # the best epoch's weights so far
    epoch: int = 0  # the last epoch done
    best: float | None = None
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def fit(
    ticks: TickArrays | Sequence[TickArrays],
    cfg: TrainConfig,
    *,
    data_info: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    state_path: str | Path | None = None,
    resume: str | Path | None = None,
) -> FitResult:
    """Train on `ticks` (one series, or several markets' at once: each is split in time order on
    its own) and return the best epoch's model, calibrated and scored on validation (and test).

    `state_path` receives a resumable checkpoint every `save_every` epochs and
    at each new best epoch; `resume` continues from such a file (same
    architecture and sequence length; its normalisation is reused).
    """
    t0 = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = checkpoint.best_device(cfg.device)
    torch.manual_seed(cfg.seed)
    payload, previous = _resumable(resume, cfg)
    run = _setup(ticks, cfg, device, data_info, previous, t0)
    state = _restore(run, payload, previous)
    stop_reason = "completed"
    for epoch in range(state.epoch + 1, cfg.num_epochs + 1):
        improved = _epoch(run, state, epoch, progress, should_stop)
        if state_path is not None and (improved or (cfg.save_every and epoch % cfg.save_every == 0)):
            _save_state(run, state, state_path)
        if cfg.patience and state.bad_epochs >= cfg.patience:
            stop_reason = f"early stop: no {cfg.monitor} gain for {cfg.patience} epochs"
            break
    return _finish(run, state, stop_reason)


def _resumable(resume: str | Path | None, cfg: TrainConfig) -> tuple[dict[str, Any] | None, ModelMeta | None]:
    """The file to resume from and its metadata, or (None, None); refused unless it holds a
    training state of the same architecture, sequence length and sizes as `cfg`."""
    if not resume:
        return None, None
    payload = checkpoint.read(resume)
    if "train_state" not in payload:
        raise checkpoint.CheckpointError(f"{resume} holds no training state to resume from")
    m = checkpoint.check_meta(payload["meta"], resume)
    if m.arch != cfg.arch or m.seq_len != cfg.seq_len or m.hparams != cfg.hparams():
        raise ValueError(
            f"{resume} is a {m.arch} (L={m.seq_len}, {m.hparams}); "
            "resume with the same architecture, sequence length and sizes"
        )
    return payload, m


def _setup(
    ticks: TickArrays | Sequence[TickArrays],
    cfg: TrainConfig,
    device: torch.device,
    data_info: dict[str, Any] | None,
    previous: ModelMeta | None,
    t0: float,
) -> _Run:
    """Windows, the net (its inputs fitted to the training rows) and its optimiser, and the metadata."""
    series = [ticks] if isinstance(ticks, TickArrays) else list(ticks)
    norm = features.Normalizer.from_dict(previous.norm) if previous else None
    data = features.build_dataset(
        series,
        cfg.seq_len,
        horizon=cfg.horizon,
        train=cfg.train_split,
        val=cfg.val_split,
        norm=norm,
        names=cfg.feature_names(),
        target=cfg.target,
    ).to(device)
    split = data.split
    y_train = data.y(split.train)
    if y_train.min() == y_train.max():
        raise ValueError("the training split has only one class (no rises or no non-rises); use more ticks")
    check_enough_ticks(sum(len(t) for t in series), cfg, what=_where(data_info or {}))
    n_windows = _check_windows(data.n_windows, cfg, data_info)
    y_val = data.y(split.val)
    val_pos = int(y_val.sum())
    warnings = [w for w in [few_ticks_warning(n_windows, val_pos, len(y_val) - val_pos)] if w]
    net = nets.build(cfg.arch, n_features=len(data.names), seq_len=cfg.seq_len, **cfg.hparams()).to(device)
    if previous is None and isinstance(net, nets.TickNet | nets.Ensemble):
        net.fit_inputs(data.windows[torch.from_numpy(split.train).to(device)][:, -1])
    opt = _make_optimizer(cfg, net.parameters())
    meta = ModelMeta(
        id=(previous.id if previous else None) or checkpoint.new_model_id(cfg.arch),
        arch=cfg.arch,
        hparams=cfg.hparams(),
        seq_len=cfg.seq_len,
        horizon=cfg.horizon,
        features=list(data.names),
        norm=data.norm.to_dict(),
        logit_offset=0.0,
        threshold=float(y_train.mean()),
        target=cfg.target,
        train=cfg.to_dict(),
        data=_data_info(series, data.split, data_info),
        created_at=checkpoint.utc_now_iso(),
        versions=checkpoint.versions(),
    )
    sched = _make_schedule(cfg, opt, _total_steps(cfg, len(split.train)))
    crit = nn.BCEWithLogitsLoss()
    return _Run(cfg, device, data, net, opt, sched, crit, meta, float(y_train.mean()), warnings, t0)


def _check_windows(n_windows: int, cfg: TrainConfig, data_info: dict[str, Any] | None) -> int:
    """The windows in all; TooFewTicks below MIN_WINDOWS (the event target merges ticks, so
    enough ticks may still be too few events)."""
    if cfg.target == "event" and n_windows < MIN_WINDOWS:
        what, todo = f"{_where(data_info or {})} (merged into events)", "use more ticks (a longer time range)"
        h = history_of(cfg)
        raise TooFewTicks(what, n_windows + cfg.seq_len + cfg.horizon + h, cfg.seq_len, cfg.horizon, todo, h)
    return n_windows


def _total_steps(cfg: TrainConfig, n_train: int) -> int:
    # at least 16: torch's one-cycle divides by zero when its warm-up ends on step 0 (4 steps)
    return max(cfg.num_epochs * _batches(n_train, cfg.batch_size) + 1, 16)


def _batches(n_train: int, bs: int) -> int:
    return n_train // bs + (1 if n_train % bs > 1 else 0)  # a lone sample breaks BatchNorm


def _make_schedule(
    cfg: TrainConfig, opt: torch.optim.Optimizer, steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """One cycle over the whole run (stepped per batch), or the ancestor's step cuts (per epoch)."""
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.25)
    return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)


def _where(info: dict[str, Any]) -> str:
    if info.get("exchange") and info.get("symbol"):
        return f"{info['exchange']}:{info['symbol']}"
    return str(info.get("source") or "the data")


def _data_info(
    series: list[TickArrays], split: features.Split, data_info: dict[str, Any] | None
) -> dict[str, Any]:
    """The checkpoint's `data`: the caller's description of the ticks, their span and the split's
    window counts (several series: the span from the earliest tick to the latest)."""
    return {
        **(data_info or {}),
        "start_time": float(min(t.time[0] for t in series)),
        "end_time": float(max(t.time[-1] for t in series)),
        "n_ticks": sum(len(t) for t in series),
        "n_series": len(series),
        "split": {k: None if v is None else len(v) for k, v in vars(split).items()},
    }


def _restore(run: _Run, payload: dict[str, Any] | None, previous: ModelMeta | None) -> _Progress:
    """A fresh start, or the epochs a resumable file says were done."""
    if payload is None or previous is None:
        return _Progress(copy.deepcopy(run.net.state_dict()))
    ts = payload["train_state"]
    run.net.load_state_dict(ts["model"])
    run.opt.load_state_dict(ts["optimizer"])
    run.sched.load_state_dict(ts["scheduler"])
    if isinstance(run.sched, torch.optim.lr_scheduler.OneCycleLR):  # more epochs asked: stretch the cycle
        run.sched.total_steps = max(run.sched.total_steps, _total_steps(run.cfg, len(run.data.split.train)))
    best_state = {k: v.to(run.device) for k, v in payload["state_dict"].items()}
    return _Progress(
        best_state, ts["epoch"], ts["best"], ts["best_epoch"], ts["bad_epochs"], list(ts["history"])
    )


def _epoch(
    run: _Run,
    state: _Progress,
    epoch: int,
    progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> bool:
    """Train one epoch, score it on validation and record it; whether it is the best so far."""
    cfg, te = run.cfg, time.perf_counter()
    train_loss, n_batches = _train_epoch(run, epoch, progress, should_stop)
    val = run.score(run.data.split.val)
    val["loss"] = val["log_loss"]
    state.history.append(
        {
            "epoch": epoch,
            "train_loss": train_loss,
            "val": val,
            "lr": run.opt.param_groups[0]["lr"],
            "seconds": time.perf_counter() - te,
        }
    )
    state.epoch = epoch
    improved = _better(cfg, val[cfg.monitor], state.best)
    if improved:
        state.best, state.best_epoch, state.bad_epochs = val[cfg.monitor], epoch, 0
        state.net_best = copy.deepcopy(run.net.state_dict())
    else:
        state.bad_epochs += 1
    if progress is not None:
        elapsed = time.perf_counter() - run.t0
        progress(Progress("epoch", epoch, cfg.num_epochs, n_batches, n_batches, train_loss, elapsed, val))
    return improved


def _train_epoch(
    run: _Run,
    epoch: int,
    progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[float, int]:
    """One pass over the training windows in this epoch's seeded order: (mean loss, batches)."""
    cfg, net, windows, targets = run.cfg, run.net, run.data.windows, run.data.targets
    train = torch.from_numpy(run.data.split.train)
    n_train, bs = len(train), cfg.batch_size
    n_batches = _batches(n_train, bs)
    net.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = train[torch.randperm(n_train, generator=gen)].to(run.device)
    per_batch = cfg.schedule == "onecycle"
    running = torch.zeros((), device=run.device)
    for b in range(n_batches):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"cancelled in epoch {epoch}, batch {b}")
        idx = perm[b * bs : (b + 1) * bs]
        out, y = net(windows[idx]), targets[idx]
        loss = run.crit(out, y if out.dim() == 1 else y.unsqueeze(-1).expand_as(out))  # an ensemble: (B, K)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        run.opt.step()
        if per_batch:
            run.sched.step()
        running += loss.detach()
        if progress is not None and ((b + 1) % cfg.progress_every == 0):
            mean, elapsed = float(running) / (b + 1), time.perf_counter() - run.t0
            progress(Progress("batch", epoch, cfg.num_epochs, b + 1, n_batches, mean, elapsed))
    if not per_batch:
        run.sched.step()
    return float(running) / max(n_batches, 1), n_batches


def _save_state(run: _Run, state: _Progress, path: str | Path) -> None:
    """A resumable file: the best weights and their scores, and where the epochs stand."""
    best = state.best_epoch
    meta = replace(run.meta, metrics={"val": state.history[best - 1]["val"]} if best else {}, best_epoch=best)
    train_state = {
        "model": {k: v.detach().cpu() for k, v in run.net.state_dict().items()},
        "optimizer": run.opt.state_dict(),
        "scheduler": run.sched.state_dict(),
        "epoch": state.epoch,
        "best": state.best,
        "best_epoch": best,
        "bad_epochs": state.bad_epochs,
        "history": state.history,
    }
    checkpoint.save(path, state.net_best, meta, train_state=train_state)


def _finish(run: _Run, state: _Progress, stop_reason: str) -> FitResult:
    """The best epoch's weights, calibrated and thresholded on validation, then scored on
    validation and test beside the baselines, as a model."""
    run.net.load_state_dict(state.net_best)
    run.net.eval()
    cfg, data, meta = run.cfg, run.data, run.meta
    parts = {"val": data.split.val} | ({"test": data.split.test} if data.split.test is not None else {})
    logits = {k: run.logits(idx) for k, idx in parts.items()}
    y = {k: data.y(idx) for k, idx in parts.items()}
    cal = calibration.fit(cfg.calibration, logits["val"], y["val"])
    p = {k: cal.apply(v) for k, v in logits.items()}
    threshold = metrics.choose_threshold(y["val"], p["val"], cfg.threshold_rule)
    meta.metrics = {k: metrics.report(y[k], p[k], threshold) for k in parts}
    meta.calibrator, meta.threshold, meta.threshold_rule = cal.to_dict(), threshold, cfg.threshold_rule
    meta.baselines, note = baselines.of_training(data, parts, cfg.threshold_rule)
    meta.best_epoch, meta.epochs = state.best_epoch, len(state.history)
    meta.train_seconds = time.perf_counter() - run.t0
    spec = features.WindowSpec(cfg.seq_len, data.norm, data.names, cfg.target)
    model = checkpoint.Model(meta.id or "", run.net, meta, run.device, spec, cal)
    return FitResult(model, meta, state.history, stop_reason, run.warnings + ([note] if note else []))
