"""Data-parallel training: one rank of a run that trains one model on N processes (DDP).

`fit_rank` is `training.fit` for a process of a torch.distributed group (set up by the caller:
Ray Train's TorchTrainer, gloo on CPU, NCCL on CUDA). Every rank builds the same windows and the
same net from the same seed (DistributedDataParallel also broadcasts rank 0's weights), walks
the training windows in fit()'s seeded order, and takes, of each global batch of `batch_size`,
its own contiguous shard (B/N windows). Its loss is scaled by its share of the batch, so that
the gradients DDP averages are the whole batch's mean gradient: each optimiser step is the
step one process takes on the whole batch, and the model equals fit()'s with the same seed
and batch size, up to float rounding (the batch's gradient is summed in another order).
Two things break that equality, by nature: dropout draws its masks per rank, and on CPU a
BatchNorm (the CNN) normalises each shard by its own statistics (on CUDA it becomes a
SyncBatchNorm, whose statistics are the whole batch's).

Rank 0 alone scores validation after each epoch, keeps the best epoch, decides early
stopping, reports progress and returns the fitted model; the other ranks return None. All
ranks leave together: the early stop is broadcast after each epoch, and a stop asked of rank 0
(`should_stop`) is all-reduced every `STOP_EVERY` batches, so no rank waits in a collective
for one that has left.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from app.market.ticks import TickArrays
from app.ml import checkpoint, training
from app.ml.config import TrainConfig
from app.ml.training import FitResult, Progress, TrainingCancelled

STOP_EVERY = 8  # batches between two checks that no rank was asked to stop (one tiny all-reduce)


def fit_rank(
    ticks: TickArrays | Sequence[TickArrays],
    cfg: TrainConfig,
    *,
    data_info: dict[str, Any] | None = None,
    progress: Callable[[Progress], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult | None:
    """This rank's part of training one model on the group's N processes; rank 0 returns it
    (as `training.fit` would), the others None. `progress` and `should_stop` are rank 0's."""
    t0 = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = checkpoint.best_device(cfg.device)
    torch.manual_seed(cfg.seed)
    run = training._setup(ticks, cfg, device, data_info, None, t0)
    if device.type == "cuda":  # the whole batch's statistics, as one process would see them
        run.net = nn.SyncBatchNorm.convert_sync_batchnorm(run.net)  # type: ignore[no-untyped-call]
    ddp = DistributedDataParallel(run.net, device_ids=[device] if device.type == "cuda" else None)
    state = training._restore(run, None, None)
    rank = dist.get_rank()
    stop_reason, flag = "completed", torch.zeros(1, device=device)
    for epoch in range(1, cfg.num_epochs + 1):
        te = time.perf_counter()
        loss, n_batches = _train_epoch(run, ddp, epoch, progress if rank == 0 else None, should_stop)
        if rank == 0:
            _record_epoch(run, state, (epoch, te), loss, n_batches, progress)
            flag.fill_(float(bool(cfg.patience and state.bad_epochs >= cfg.patience)))
        dist.broadcast(flag, src=0)
        if flag.item():
            stop_reason = f"early stop: no {cfg.monitor} gain for {cfg.patience} epochs"
            break
    return training._finish(run, state, stop_reason) if rank == 0 else None


def _train_epoch(
    run: training._Run,
    ddp: nn.Module,
    epoch: int,
    progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool] | None,
) -> tuple[float, int]:
    """One pass over the training windows in fit()'s order for this epoch, this rank's shard of
    each batch: (the whole batch's mean loss over the epoch, batches)."""
    cfg, windows, targets = run.cfg, run.data.windows, run.data.targets
    rank, world = dist.get_rank(), dist.get_world_size()
    train = torch.from_numpy(run.data.split.train)
    n_train, bs = len(train), cfg.batch_size
    n_batches = training._batches(n_train, bs)
    ddp.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # training._train_epoch's order
    perm = train[torch.randperm(n_train, generator=gen)].to(run.device)
    per_batch = cfg.schedule == "onecycle"
    running = torch.zeros((), device=run.device)
    for b in range(n_batches):
        if b % STOP_EVERY == 0 and _asked_to_stop(should_stop, run.device):
            raise TrainingCancelled(f"cancelled in epoch {epoch}, batch {b}")
        batch = perm[b * bs : (b + 1) * bs]
        loss = _shard_loss(run, ddp, batch, batch.tensor_split(world)[rank], windows, targets, world)
        run.opt.zero_grad(set_to_none=True)
        # DDP averages the ranks' gradients: the whole batch's mean gradient
        loss.backward()  # type: ignore[no-untyped-call]
        if cfg.clip > 0:
            nn.utils.clip_grad_norm_(ddp.parameters(), cfg.clip)
        run.opt.step()
        if per_batch:
            run.sched.step()
        running += loss.detach()
        if progress is not None and ((b + 1) % cfg.progress_every == 0):
            mean, elapsed = float(running) / (b + 1), time.perf_counter() - run.t0
            progress(Progress("batch", epoch, cfg.num_epochs, b + 1, n_batches, mean, elapsed))
    if not per_batch:
        run.sched.step()
    dist.all_reduce(running)  # the shards' scaled losses average to the whole batches' losses
    return float(running) / world / max(n_batches, 1), n_batches


def _shard_loss(
    run: training._Run,
    ddp: nn.Module,
    batch: torch.Tensor,
    mine: torch.Tensor,
    windows: torch.Tensor,
    targets: torch.Tensor,
    world: int,
) -> torch.Tensor:
    """This rank's loss, scaled by its share of the batch (N * its windows / the batch's), so that
    the N ranks' mean is the batch's mean loss. A rank whose shard is empty (a last batch smaller
    than N) still takes part, with one window weighted zero: every rank must join each all-reduce."""
    share = len(mine) * world / len(batch)
    idx = mine if len(mine) else batch[:1]
    out, y = ddp(windows[idx]), targets[idx]
    loss: torch.Tensor = run.crit(out, y if out.dim() == 1 else y.unsqueeze(-1).expand_as(out))
    return loss * share


def _asked_to_stop(should_stop: Callable[[], bool] | None, device: torch.device) -> bool:
    """Whether any rank was asked to stop (only rank 0 is asked; every rank learns it here)."""
    flag = torch.tensor([float(should_stop is not None and should_stop())], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def _record_epoch(
    run: training._Run,
    state: training._Progress,
    when: tuple[int, float],
    train_loss: float,
    n_batches: int,
    progress: Callable[[Progress], None] | None,
) -> None:
    """Rank 0's bookkeeping of an epoch, as `training._epoch` keeps it: validation scores, the
    history, the best weights so far, epochs without a gain, and the epoch's progress. `when`:
    the epoch and when it started (perf_counter)."""
    cfg, (epoch, te) = run.cfg, when
    val = run.score(run.data.split.val)
    val["loss"] = val["log_loss"]
    lr = run.opt.param_groups[0]["lr"]
    state.history.append(
        {"epoch": epoch, "train_loss": train_loss, "val": val, "lr": lr, "seconds": time.perf_counter() - te}
    )
    state.epoch = epoch
    if training._better(cfg, val[cfg.monitor], state.best):
        state.best, state.best_epoch, state.bad_epochs = val[cfg.monitor], epoch, 0
        state.net_best = copy.deepcopy(run.net.state_dict())
    else:
        state.bad_epochs += 1
    if progress is not None:
        elapsed = time.perf_counter() - run.t0
        progress(Progress("epoch", epoch, cfg.num_epochs, n_batches, n_batches, train_loss, elapsed, val))
