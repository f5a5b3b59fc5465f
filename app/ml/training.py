"""fit(): one training run from ticks to a scored, checkpointable model.

The loop is deliberately plain (nanoGPT-style): build the windows once as a
strided view on the device, gather one batch of window indices at a time, and
keep every per-batch cost other than forward/backward/step negligible, so an
epoch stays close to the compute floor.

Class imbalance (about a third of ticks rise) is handled with BCE's
pos_weight = neg/pos. That shifts the learned log-odds by log(pos_weight), so
the model adds `logit_offset = -log(pos_weight)` at inference to report
calibrated probabilities; the decision threshold is then the training base
rate, which is exactly where the weighted model would have said 0.5.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from app.market.ticks import TickArrays
from app.ml import checkpoint, evaluation, features, metrics, nets
from app.ml.config import TrainConfig
from app.ml.meta import ModelMeta

# Training needs at least MIN_WINDOWS windows (a window: seq_len ticks, scored on the tick `horizon`
# after them), and below FEW_WINDOWS its result carries a warning. Below 1,000 windows the validation
# split holds under 200, whose AUC is uncertain by +-0.09 (95%): most of the 0.13 between chance and
# the best model on real trades (0.63), so the metrics cannot tell a useful model from a useless one
# (the job on 904 ticks that scored 0.511 and said nothing). Above it they can, but the model learns
# little: the default CNN on the synthetic market, test AUC over 6 seeds (mean +- sd): 1,000 windows
# 0.51 +- 0.05, 2,000 0.51 +- 0.04, 5,000 0.57 +- 0.03, 10,000 0.58 +- 0.01, 30,000 0.59 +- 0.01.
MIN_WINDOWS = 1_000
FEW_WINDOWS = 10_000


class TrainingCancelled(Exception):
    """Raised between batches when `should_stop()` says so; nothing is written after it."""


class TooFewTicks(ValueError):
    """Fewer than MIN_WINDOWS training windows: the model's metrics would be noise. The message
    says how many ticks are needed for the configured sequence length (`shortfall`), then what
    gets more (`todo`), so a caller with other means may say its own `todo`."""

    def __init__(self, what: str, n_ticks: int, seq_len: int, horizon: int, todo: str) -> None:
        self.n_ticks, self.needed = n_ticks, ticks_needed(seq_len, horizon)
        self.shortfall = (
            f"{what} has {n_ticks:,} ticks; training needs at least {MIN_WINDOWS:,} windows, i.e. "
            f"{self.needed:,} ticks at seq_len {seq_len} and horizon {horizon}"
        )
        super().__init__(f"{self.shortfall}: {todo}")


def ticks_needed(seq_len: int, horizon: int = 1) -> int:
    """Ticks that make MIN_WINDOWS windows (each window's target is `horizon` ticks past it)."""
    return MIN_WINDOWS + seq_len + horizon


def check_enough_ticks(
    n_ticks: int,
    cfg: TrainConfig,
    what: str = "the data",
    todo: str = "use more ticks (a longer time range, or a bigger file)",
) -> None:
    """TooFewTicks unless `n_ticks` make MIN_WINDOWS windows for `cfg`."""
    if n_ticks < ticks_needed(cfg.seq_len, cfg.horizon):
        raise TooFewTicks(what, n_ticks, cfg.seq_len, cfg.horizon, todo)


def few_ticks_warning(n_windows: int, n_val_pos: int, n_val_neg: int) -> str | None:
    """Below FEW_WINDOWS: how noisy the validation AUC is (the 95% half-width of a chance-level
    AUC on this many rises and non-rises, Hanley and McNeil), and what would help."""
    if n_windows >= FEW_WINDOWS:
        return None
    p, n = max(n_val_pos, 1), max(n_val_neg, 1)
    half = 1.96 * math.sqrt((p + n + 1) / (12 * p * n))
    return (
        f"few ticks: {n_windows:,} windows ({n_val_pos + n_val_neg:,} to validate), so metrics are "
        f"noisy (validation AUC +-{half:.2f}); train on {FEW_WINDOWS:,} windows or more to trust them"
    )


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
    sched: torch.optim.lr_scheduler.StepLR
    crit: nn.BCEWithLogitsLoss
    meta: ModelMeta
    logit_offset: float
    threshold: float
    warnings: list[str]
    t0: float

    def score(self, rng: tuple[int, int]) -> dict[str, float]:
        cfg = self.cfg
        return evaluation.score(
            self.net, self.data, rng, self.logit_offset, self.threshold, cfg.eval_batch_size
        )


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
    ticks: TickArrays,
    cfg: TrainConfig,
    *,
    data_info: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    state_path: str | Path | None = None,
    resume: str | Path | None = None,
) -> FitResult:
    """Train on `ticks` and return the best epoch's model, scored on validation (and test).

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
    ticks: TickArrays,
    cfg: TrainConfig,
    device: torch.device,
    data_info: dict[str, Any] | None,
    previous: ModelMeta | None,
    t0: float,
) -> _Run:
    """Windows, class balance and calibration, the net and its optimiser, and the metadata."""
    norm = features.Normalizer.from_dict(previous.norm) if previous else None
    data = features.build_dataset(
        ticks, cfg.seq_len, horizon=cfg.horizon, train=cfg.train_split, val=cfg.val_split, norm=norm
    ).to(device)
    split = data.split
    y_train = data.targets[split.train[0] : split.train[1]]
    n_pos = float(y_train.sum())
    n_neg = float(len(y_train) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the training split has only one class (no rises or no non-rises); use more ticks")
    check_enough_ticks(len(ticks), cfg, what=_where(data_info or {}))
    y_val = data.targets[split.val[0] : split.val[1]]
    val_pos = int(y_val.sum())
    warnings = [w for w in [few_ticks_warning(len(data.targets), val_pos, len(y_val) - val_pos)] if w]
    pos_weight = n_neg / n_pos
    net = nets.build(cfg.arch, n_features=len(features.FEATURES), seq_len=cfg.seq_len, **cfg.hparams())
    net = net.to(device)
    opt = _make_optimizer(cfg, net.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    crit = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
    logit_offset, threshold = -math.log(pos_weight), n_pos / (n_pos + n_neg)
    meta = ModelMeta(
        id=(previous.id if previous else None) or checkpoint.new_model_id(cfg.arch),
        arch=cfg.arch,
        hparams=cfg.hparams(),
        seq_len=cfg.seq_len,
        horizon=cfg.horizon,
        features=list(features.FEATURES),
        norm=data.norm.to_dict(),
        logit_offset=logit_offset,
        threshold=threshold,
        train=cfg.to_dict(),
        data=_data_info(ticks, data.split, data_info),
        created_at=checkpoint.utc_now_iso(),
        versions=checkpoint.versions(),
    )
    return _Run(cfg, device, data, net, opt, sched, crit, meta, logit_offset, threshold, warnings, t0)


def _where(info: dict[str, Any]) -> str:
    if info.get("exchange") and info.get("symbol"):
        return f"{info['exchange']}:{info['symbol']}"
    return str(info.get("source") or "the data")


def _data_info(ticks: TickArrays, split: features.Split, data_info: dict[str, Any] | None) -> dict[str, Any]:
    """The checkpoint's `data`: the caller's description of the ticks, their span and the split."""
    return {
        **(data_info or {}),
        "start_time": float(ticks.time[0]),
        "end_time": float(ticks.time[-1]),
        "n_ticks": len(ticks),
        "split": {
            "train": list(split.train),
            "val": list(split.val),
            "test": list(split.test) if split.test else None,
        },
    }


def _restore(run: _Run, payload: dict[str, Any] | None, previous: ModelMeta | None) -> _Progress:
    """A fresh start, or the epochs a resumable file says were done."""
    if payload is None or previous is None:
        return _Progress(copy.deepcopy(run.net.state_dict()))
    ts = payload["train_state"]
    run.net.load_state_dict(ts["model"])
    run.opt.load_state_dict(ts["optimizer"])
    run.sched.load_state_dict(ts["scheduler"])
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
    lo, hi = run.data.split.train
    n_train, bs = hi - lo, cfg.batch_size
    n_batches = n_train // bs + (1 if n_train % bs > 1 else 0)  # a lone sample breaks BatchNorm
    net.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    perm = (torch.randperm(n_train, generator=gen) + lo).to(run.device)
    running = torch.zeros((), device=run.device)
    for b in range(n_batches):
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"cancelled in epoch {epoch}, batch {b}")
        idx = perm[b * bs : (b + 1) * bs]
        loss = run.crit(net(windows[idx]), targets[idx])
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
        run.opt.step()
        running += loss.detach()
        if progress is not None and ((b + 1) % cfg.progress_every == 0):
            mean, elapsed = float(running) / (b + 1), time.perf_counter() - run.t0
            progress(Progress("batch", epoch, cfg.num_epochs, b + 1, n_batches, mean, elapsed))
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
    """The best epoch's weights, scored on validation and test, as a model."""
    run.net.load_state_dict(state.net_best)
    run.net.eval()
    split = run.data.split
    scores = {"val": run.score(split.val)}
    if split.test is not None:
        scores["test"] = run.score(split.test)
    meta = run.meta
    meta.metrics, meta.best_epoch, meta.epochs = scores, state.best_epoch, len(state.history)
    meta.train_seconds = time.perf_counter() - run.t0
    model = checkpoint.Model(meta.id or "", run.net, meta, run.data.norm, run.device)
    return FitResult(model, meta, state.history, stop_reason, run.warnings)
