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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from app.market.ticks import TickArrays
from app.ml import checkpoint, features, metrics, nets

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
    says how many ticks are needed for the configured sequence length."""

    def __init__(self, what: str, n_ticks: int, seq_len: int, horizon: int, todo: str) -> None:
        self.n_ticks, self.needed = n_ticks, ticks_needed(seq_len, horizon)
        super().__init__(
            f"{what} has {n_ticks:,} ticks; training needs at least {MIN_WINDOWS:,} windows, i.e. "
            f"{self.needed:,} ticks at seq_len {seq_len} and horizon {horizon}: {todo}"
        )


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


@dataclass
class TrainConfig:
    arch: str = "CNN"
    seq_len: int = 32
    horizon: int = 1
    hidden_size: int = 32
    num_layers: int = 2
    dropout: float = 0.3
    batch_size: int = 256
    num_epochs: int = 8
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 2e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    step_size: int = 3
    gamma: float = 0.5
    clip: float = 1.0
    patience: int = 3
    monitor: str = "auc"
    train_split: float = 0.6
    val_split: float = 0.2
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    save_every: int = 0
    eval_batch_size: int = 4096
    progress_every: int = 20

    def __post_init__(self) -> None:
        self.arch = nets.canonical_arch(self.arch)
        for name in (
            "seq_len",
            "horizon",
            "hidden_size",
            "num_layers",
            "batch_size",
            "eval_batch_size",
            "progress_every",
            "step_size",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("num_epochs", "patience", "save_every", "seed"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ValueError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"learning rate must be a positive number, got {self.lr!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.weight_decay < 0 or not 0 < self.gamma <= 1 or self.clip < 0:
            raise ValueError("weight_decay must be >= 0, gamma in (0, 1], clip >= 0 (0 = off)")
        if self.monitor not in metrics.HIGHER_IS_BETTER:
            raise ValueError(f"monitor must be one of {sorted(metrics.HIGHER_IS_BETTER)}")
        if self.num_threads is not None and self.num_threads < 1:
            raise ValueError("num_threads must be >= 1")
        # checks the hyper-parameters and the split now, before any data is touched
        nets.build(self.arch, n_features=len(features.FEATURES), seq_len=self.seq_len, **self.hparams())
        features.chronological_split(1000, self.train_split, self.val_split, 1)

    def hparams(self) -> dict[str, Any]:
        hp: dict[str, Any] = {"hidden_size": self.hidden_size, "num_layers": self.num_layers}
        if self.arch in ("LSTM", "GRU"):
            hp["dropout"] = self.dropout
        return hp


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
    meta: dict[str, Any]
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


@torch.inference_mode()
def predict_logits(
    net: nn.Module, windows: torch.Tensor, lo: int, hi: int, batch_size: int = 4096
) -> torch.Tensor:
    """Logits of windows [lo, hi) in eval mode, batched to bound memory."""
    was_training = net.training
    net.eval()
    out = [net(windows[a : min(a + batch_size, hi)]) for a in range(lo, hi, batch_size)]
    net.train(was_training)
    return torch.cat(out) if out else torch.empty(0, device=windows.device)


def score(
    net: nn.Module,
    data: features.WindowedData,
    rng: tuple[int, int],
    logit_offset: float,
    threshold: float,
    batch_size: int = 4096,
) -> dict[str, float]:
    """Metrics of calibrated probabilities on one split."""
    logits = predict_logits(net, data.windows, rng[0], rng[1], batch_size)
    p = torch.sigmoid(logits + logit_offset).float().cpu().numpy()
    y = data.targets[rng[0] : rng[1]].float().cpu().numpy()
    return metrics.report(y, p, threshold)


def _better(cfg: TrainConfig, new: float, best: float | None) -> bool:
    if best is None or math.isnan(best):
        return not math.isnan(new)
    return new > best if metrics.HIGHER_IS_BETTER[cfg.monitor] else new < best


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

    payload = checkpoint.read(resume) if resume else None
    if payload is not None:
        if "train_state" not in payload:
            raise checkpoint.CheckpointError(f"{resume} holds no training state to resume from")
        m = payload["meta"]
        if m["arch"] != cfg.arch or m["seq_len"] != cfg.seq_len or m["hparams"] != cfg.hparams():
            raise ValueError(
                f"{resume} is a {m['arch']} (L={m['seq_len']}, {m['hparams']}); "
                "resume with the same architecture, sequence length and sizes"
            )
    norm = features.Normalizer.from_dict(payload["meta"]["norm"]) if payload else None
    data = features.build_dataset(
        ticks, cfg.seq_len, horizon=cfg.horizon, train=cfg.train_split, val=cfg.val_split, norm=norm
    ).to(device)
    split = data.split
    y_train = data.targets[split.train[0] : split.train[1]]
    n_pos = float(y_train.sum())
    n_neg = float(len(y_train) - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError("the training split has only one class (no rises or no non-rises); use more ticks")
    info_in = data_info or {}
    where = (
        f"{info_in['exchange']}:{info_in['symbol']}"
        if info_in.get("exchange") and info_in.get("symbol")
        else str(info_in.get("source") or "the data")
    )
    check_enough_ticks(len(ticks), cfg, what=where)
    y_val = data.targets[split.val[0] : split.val[1]]
    val_pos = int(y_val.sum())
    warnings = [w for w in [few_ticks_warning(len(data.targets), val_pos, len(y_val) - val_pos)] if w]
    pos_weight = n_neg / n_pos
    logit_offset = -math.log(pos_weight)
    threshold = n_pos / (n_pos + n_neg)

    net = nets.build(cfg.arch, n_features=len(features.FEATURES), seq_len=cfg.seq_len, **cfg.hparams()).to(
        device
    )
    opt = _make_optimizer(cfg, net.parameters())
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    crit = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))

    info = dict(data_info or {})
    info.update(
        start_time=float(ticks.time[0]),
        end_time=float(ticks.time[-1]),
        n_ticks=len(ticks),
        split={
            "train": list(split.train),
            "val": list(split.val),
            "test": list(split.test) if split.test else None,
        },
    )
    meta: dict[str, Any] = {
        "id": checkpoint.new_model_id(cfg.arch),
        "arch": cfg.arch,
        "hparams": cfg.hparams(),
        "seq_len": cfg.seq_len,
        "horizon": cfg.horizon,
        "features": list(features.FEATURES),
        "norm": data.norm.to_dict(),
        "logit_offset": logit_offset,
        "threshold": threshold,
        "train": asdict(cfg),
        "data": info,
        "created_at": checkpoint.utc_now_iso(),
        "versions": checkpoint.versions(),
    }

    start_epoch, best, best_epoch, bad, history = 1, None, 0, 0, []
    best_state = copy.deepcopy(net.state_dict())
    if payload is not None:
        ts = payload["train_state"]
        net.load_state_dict(ts["model"])
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        start_epoch, best, best_epoch = ts["epoch"] + 1, ts["best"], ts["best_epoch"]
        bad, history = ts["bad_epochs"], list(ts["history"])
        best_state = {k: v.to(device) for k, v in payload["state_dict"].items()}
        meta["id"] = payload["meta"]["id"]

    def save_state(epoch: int) -> None:
        if state_path is None:
            return
        meta_now = {
            **meta,
            "metrics": {"val": history[best_epoch - 1]["val"]} if best_epoch else {},
            "best_epoch": best_epoch,
        }
        checkpoint.save(
            state_path,
            best_state,
            meta_now,
            train_state={
                "model": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "best": best,
                "best_epoch": best_epoch,
                "bad_epochs": bad,
                "history": history,
            },
        )

    windows = data.windows
    lo, hi = split.train
    n_train = hi - lo
    bs = cfg.batch_size
    n_batches = n_train // bs + (1 if n_train % bs > 1 else 0)  # a lone sample breaks BatchNorm
    stop_reason = "completed"
    for epoch in range(start_epoch, cfg.num_epochs + 1):
        te = time.perf_counter()
        net.train()
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = (torch.randperm(n_train, generator=gen) + lo).to(device)
        running = torch.zeros((), device=device)
        for b in range(n_batches):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"cancelled in epoch {epoch}, batch {b}")
            idx = perm[b * bs : (b + 1) * bs]
            loss = crit(net(windows[idx]), data.targets[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip > 0:
                nn.utils.clip_grad_norm_(net.parameters(), cfg.clip)
            opt.step()
            running += loss.detach()
            if progress is not None and ((b + 1) % cfg.progress_every == 0):
                progress(
                    Progress(
                        "batch",
                        epoch,
                        cfg.num_epochs,
                        b + 1,
                        n_batches,
                        float(running) / (b + 1),
                        time.perf_counter() - t0,
                    )
                )
        sched.step()
        train_loss = float(running) / max(n_batches, 1)
        val = score(net, data, split.val, logit_offset, threshold, cfg.eval_batch_size)
        val["loss"] = val["log_loss"]
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val": val,
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - te,
            }
        )
        improved = _better(cfg, val[cfg.monitor], best)
        if improved:
            best, best_epoch, bad = val[cfg.monitor], epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            bad += 1
        if progress is not None:
            progress(
                Progress(
                    "epoch",
                    epoch,
                    cfg.num_epochs,
                    n_batches,
                    n_batches,
                    train_loss,
                    time.perf_counter() - t0,
                    val,
                )
            )
        if improved or (cfg.save_every and epoch % cfg.save_every == 0):
            save_state(epoch)
        if cfg.patience and bad >= cfg.patience:
            stop_reason = f"early stop: no {cfg.monitor} gain for {cfg.patience} epochs"
            break

    net.load_state_dict(best_state)
    net.eval()
    scores = {"val": score(net, data, split.val, logit_offset, threshold, cfg.eval_batch_size)}
    if split.test is not None:
        scores["test"] = score(net, data, split.test, logit_offset, threshold, cfg.eval_batch_size)
    meta.update(
        metrics=scores, best_epoch=best_epoch, epochs=len(history), train_seconds=time.perf_counter() - t0
    )
    model = checkpoint.Model(meta["id"], net, meta, data.norm, device)
    return FitResult(model, meta, history, stop_reason, warnings)
