"""Data-parallel jobs: one model trained by N Ray Train workers (DDP), for `workers` > 1.

Such a job's task (`ray_backend`) is the job's worker as any other: it loads the ticks, and
where a single job calls `training.fit`, it calls the fit `data_parallel(N)` returns, which
coordinates from inside the task: Ray Train's `TorchTrainer` (ScalingConfig(num_workers=N,
use_gpu=cuda); gloo on CPU, NCCL on GPU) runs `ddp.fit_rank` on every worker with the same
series, and a thread relays rank 0's progress to the job's, and the job's stop (its flag and its
orphan check, `should_stop`) to rank 0 through a Flag of the run's own. Rank 0 returns the
fitted model on the CPU; the job saves, compares and publishes it as any job's model.

A failure is said as a job's error is: a rank's ValueError (too few ticks, one class) as it is,
a stop as a cancel, anything else as "data-parallel training on N Ray workers failed: ...".
Ray Train retries nothing (max_failures=0): a job is run once, as a local one.
"""

from __future__ import annotations

import logging
import queue as queue_mod
import shutil
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

import ray

from app.market.ticks import TickArrays
from app.ml.config import TrainConfig
from app.ml.training import FitResult, Progress, TrainingCancelled
from app.services.jobs.ray_flag import FlagReader, new_flags

log = logging.getLogger(__name__)

Fit = Callable[..., FitResult]
RUN = "run"  # the run's key in its own Flags actor


def data_parallel(workers: int) -> Fit:
    """A `training.fit` that trains on `workers` Ray Train workers."""

    def fit(
        ticks: TickArrays | Sequence[TickArrays],
        cfg: TrainConfig,
        *,
        data_info: dict[str, Any] | None = None,
        progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> FitResult:
        series = [ticks] if isinstance(ticks, TickArrays) else list(ticks)
        return fit_on_workers(series, cfg, workers, data_info, progress, should_stop or (lambda: False))

    return fit


def fit_on_workers(
    series: list[TickArrays],
    cfg: TrainConfig,
    workers: int,
    data_info: dict[str, Any] | None,
    progress: Callable[[Progress], None] | None,
    should_stop: Callable[[], bool],
) -> FitResult:
    """Train on `workers` ranks and return rank 0's model (TrainingCancelled once stopped)."""
    from ray.util.queue import Queue

    flag, relay_q = new_flags(), Queue(actor_options={"num_cpus": 0})
    storage = tempfile.mkdtemp(prefix="tickcast-ray-train-")
    relay = _Relay(relay_q, flag, progress, should_stop)
    loop_config = {
        "series": ray.put(series),
        "cfg": cfg.to_dict(),
        "data_info": data_info,
        "flag": flag,
        "relay": relay_q.actor,
        "threads": cfg.num_threads or 1,
    }
    trainer = _trainer(loop_config, workers, cfg.device.startswith("cuda"), storage)
    relay.start()
    try:
        result = trainer.fit()
    except Exception as e:  # ray.train.TrainingFailedError, or the controller's own death
        raise _failure(e, workers, relay.stopped or should_stop()) from e
    finally:
        relay.finish()
        actors: list[Any] = [flag, relay_q.actor]
        for actor in actors:
            ray.kill(actor, no_restart=True)
        shutil.rmtree(storage, ignore_errors=True)
    fitted: FitResult = result.return_value
    return fitted


def _trainer(loop_config: dict[str, Any], workers: int, cuda: bool, storage: str) -> Any:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.train.v2.api.config import LoggingConfig

    per_worker = {"CPU": float(loop_config["threads"]), **({"GPU": 1.0} if cuda else {})}
    return TorchTrainer(
        _rank,  # type: ignore[arg-type]  # rank 0's return value is the result's (Ray Train v2)
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=cuda, resources_per_worker=per_worker),
        torch_config=TorchConfig(backend="nccl" if cuda else "gloo"),
        run_config=RunConfig(
            name="tickcast-data-parallel",
            storage_path=storage,
            failure_config=FailureConfig(max_failures=0),
            logging_config=LoggingConfig(log_level="WARNING"),  # type: ignore[call-arg]  # v2's RunConfig
        ),
    )


def _rank(config: dict[str, Any]) -> FitResult | None:
    """One Ray Train worker: background work as a job's worker is (`yield_cpu`), then its rank
    of `ddp.fit_rank`; rank 0 sends progress (without waiting) and reads the run's stop."""
    import torch
    from ray import train
    from ray.train import torch as ray_torch

    from app.ml import ddp
    from app.services.jobs.worker import yield_cpu

    yield_cpu(config["threads"])
    device = ray_torch.get_device()
    cfg = TrainConfig.from_dict({**config["cfg"], "device": str(device)})
    rank0 = train.get_context().get_world_rank() == 0
    relay = config["relay"]

    def progress(p: Progress) -> None:
        relay.put_nowait.remote(p)  # in order (one caller), never waiting on the coordinator

    try:
        fitted = ddp.fit_rank(
            ray.get(config["series"]),
            cfg,
            data_info=config["data_info"],
            progress=progress if rank0 else None,
            should_stop=FlagReader(config["flag"], RUN).is_set if rank0 else None,
        )
    except TrainingCancelled:
        raise
    except ValueError as e:  # said to the job as it is (TooFewTicks cannot be unpickled: plain)
        raise ValueError(str(e)) from e
    except Exception as e:  # any exception must cross to the coordinator; not all unpickle
        raise RuntimeError(f"{type(e).__name__}: {e}") from e
    if fitted is not None:  # the job's task saves and scores it, on a machine that may have no GPU
        fitted.model.net.cpu()
        fitted.model.device = torch.device("cpu")
    return fitted


class _Relay(threading.Thread):
    """Rank 0's progress to the job, the job's stop to rank 0, every 0.1 s while training runs."""

    def __init__(
        self,
        relay_q: Any,
        flag: Any,
        progress: Callable[[Progress], None] | None,
        should_stop: Callable[[], bool],
    ) -> None:
        super().__init__(name="tickcast-ddp-relay", daemon=True)
        self.relay_q, self.flag, self.progress, self.should_stop = relay_q, flag, progress, should_stop
        self.stopped = False
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            if not self.stopped and self.should_stop():
                self.stopped = True
                self.flag.set.remote(RUN)
            try:
                self._tell(self.relay_q.get(timeout=0.1))
            except queue_mod.Empty:
                continue
            except ray.exceptions.RayError:
                return

    def finish(self) -> None:
        """Stop relaying, after the progress rank 0 sent last (its last epoch)."""
        self._done.set()
        self.join(5.0)
        try:
            while True:
                self._tell(self.relay_q.get_nowait())
        except (queue_mod.Empty, ray.exceptions.RayError):
            pass

    def _tell(self, p: Progress) -> None:
        if self.progress is not None:
            try:
                self.progress(p)
            except Exception:  # the job's queue gone: the job is ending anyway
                log.exception("could not relay data-parallel progress")


def _failure(e: Exception, workers: int, stopped: bool) -> Exception:
    """The job's error for a failed run: the stop, a rank's ValueError as it is, else what failed."""
    if stopped:
        return TrainingCancelled(f"cancelled while training on {workers} Ray workers")
    rank, cause = _first_cause(e)
    if isinstance(cause, TrainingCancelled | ValueError):
        return cause
    detail = (str(cause).strip().splitlines() or [""])[0][:300]
    where = f"rank {rank}: " if rank is not None else ""
    return RuntimeError(
        f"data-parallel training on {workers} Ray workers failed: {where}{type(cause).__name__}: {detail}"
    )


def _first_cause(e: Exception) -> tuple[int | None, BaseException]:
    """The lowest rank's own exception inside Ray Train's (and Ray's task) wrappers."""
    failures: dict[int, BaseException] = getattr(e, "worker_failures", None) or {}
    rank = min(failures) if failures else None
    cause: BaseException = failures[rank] if rank is not None else e
    for _ in range(5):  # RayTaskError.cause, UserExceptionWithTraceback, ControllerError...
        inner = getattr(cause, "cause", None) or getattr(cause, "controller_failure", None)
        if not isinstance(inner, BaseException) or inner is cause:
            break
        cause = inner
    return rank, cause
