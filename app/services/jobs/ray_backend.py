"""Training jobs as tasks on a Ray cluster, behind the Spawner interface of local processes.

`ray_spawner(address)` makes, for each job, the three things `JobManager` asks a spawner for,
so that `follow`, `reap` and the manager cannot tell a Ray job from a local one:

- the worker (`RayWorker`): a Ray task running `job_worker.run`, the function a local process
  runs, with `num_cpus` = the job's threads and one GPU when the job asks for CUDA. It is alive
  until its task ends; `kill()` is `ray.cancel(force=True)`;
- the queue (`RayMessages`): the job's `ray.util.queue.Queue`, read without blocking the event
  loop (one long-poll `get` in flight, checked with a zero timeout), and after a death the one
  final message the task could not send;
- the stop event (`RayStop`): the job's bit in the service's `ray_flag.Flags` actor, which
  the task reads between batches.

A task that raised, or whose process or node died, ends the job `failed` with a reason naming
what Ray saw (the manager's `job_recovery` words a local exit code instead). A death the
service caused or expected is left to `job_recovery`, as a local one: after a kill (a cancel
past its grace, a shutdown), after a stop was asked, or once the job had saved its model
(claimed by the job's record). The task's process binds its lifeline (`lifeline.arm`, given no
parent pid) to its own parent, the raylet that started it, on whichever machine it runs.

A data-parallel job (`workers` > 1) runs the same way; its task coordinates Ray Train's
workers (`ray_train`), which hold the CPUs and GPUs, so the task itself asks for none.
Ray is imported only here and in the other `ray_*` modules, and only with job_backend ray.
"""

from __future__ import annotations

import logging
import os
import queue as queue_mod
import signal
import threading
import time
from typing import Any

from app.database import is_postgres, redact
from app.services.jobs import worker as job_worker
from app.services.jobs.store import JobRecord

log = logging.getLogger(__name__)

RAY_MISSING = "job_backend ray needs Ray, which is not installed: pip install 'tickcast[ray]'"


class RayMissing(RuntimeError):
    """job_backend is ray and Ray is not installed; the message says how to install it."""


def ray_spawner(address: str | None = None, *, num_cpus: int | None = None) -> RaySpawner:
    """Jobs as tasks on the Ray cluster at `address` (None: a local Ray started in this process
    with `num_cpus` CPUs, default all of this machine's). Ray starts on the first job; that
    Ray is missing is said now, at the service's start (RayMissing)."""
    try:
        import ray  # noqa: F401  # the check; the ray_* modules import it when used
    except ImportError as e:
        raise RayMissing(RAY_MISSING) from e
    from app.services.jobs.ray_cluster import Cluster

    return RaySpawner(Cluster(address, num_cpus))


class RaySpawner:
    """A `Spawner` (`process.py`) whose jobs may ask for `workers` > 1 (`data_parallel`)."""

    data_parallel = True

    def __init__(self, cluster: Any) -> None:
        self.cluster = cluster

    def __call__(
        self, record: JobRecord, store_path: str | None, models_dir: str, threads: int, *, gap_s: float
    ) -> tuple[Any, Any, Any]:
        job = _Job(self.cluster, record, (record.spec, store_path, models_dir, threads), gap_s)
        return RayWorker(job), RayMessages(job), RayStop(job)


def _task(
    spec: dict[str, Any],
    store_path: str | None,
    models_dir: str,
    threads: int,
    queue: Any,
    flags: Any,
    job_id: str,
    gap_s: float,
) -> None:
    """The Ray task: says where it runs (a message only `RayMessages` reads), then is the job's
    worker exactly as a local process would be, its stop read from its bit in `flags`."""
    import ray

    from app.services.jobs.ray_flag import FlagReader

    queue.put(("worker", {"pid": os.getpid(), "node": ray.util.get_node_ip_address()}))  # type: ignore[no-untyped-call]
    job_worker.run(
        spec, store_path, models_dir, threads, queue, FlagReader(flags, job_id), job_id, None, gap_s
    )


class _Job:
    """What the three views of one job share; its fields change under `lock`."""

    def __init__(self, cluster: Any, record: JobRecord, args: tuple[Any, ...], gap_s: float) -> None:
        self.cluster, self.id, self.args, self.gap_s = cluster, record.id, args, gap_s
        self.lock = threading.Lock()
        self.ref: Any = None  # the task, once launched
        self.queue: Any = None
        self.flags: Any = None  # the cluster's Flags actor, once launched
        self.pid: int | None = None
        self.node: str | None = None
        self.saved: str | None = None
        self.stop_asked = self.killed = self.ended = False
        self.exitcode: int | None = None
        self.final: tuple[str, Any] | None = None  # the message the task could not send

    def start(self) -> None:
        self.cluster.run_soon(self._launch, self._never_started)

    def _launch(self) -> None:
        from ray.util.queue import Queue

        from app.services.jobs.ray_cluster import remote, shortfall

        spec, store_path, models_dir, threads = self.args
        workers, cuda = int(spec.get("workers", 1)), str(spec["config"].get("device", "")).startswith("cuda")
        cpus, gpus = (threads, int(cuda)) if workers == 1 else (0, 0)  # Ray Train's workers hold them
        what = "this job" if workers == 1 else f"this {workers}-worker job"
        missing = shortfall(threads * workers, int(cuda) * workers, what)
        if missing is not None:
            self._never_started(missing)
            return
        with self.lock:
            if self.ended:  # killed while it waited for this thread
                return
            if self.stop_asked:
                self.ended, self.exitcode = True, 0
                self.final = ("cancelled", "stopped before it started")
                return
            self.queue, self.flags = Queue(actor_options={"num_cpus": 0}), self.cluster.flags()
            fn = remote(_task).options(num_cpus=cpus, num_gpus=gpus, name=f"tickcast-job-{self.id}")
            self.ref = fn.remote(
                spec, store_path, models_dir, threads, self.queue, self.flags, self.id, self.gap_s
            )
        log.info("job %s: launched on %s", self.id, self.cluster.where())

    def _never_started(self, reason: str) -> None:
        with self.lock:
            if self.ended:  # killed meanwhile
                return
            self.ended, self.exitcode = True, 1
            self.final = ("failed", self._redacted(reason))

    def alive(self) -> bool:
        import ray

        with self.lock:
            if self.ended:
                return False
            ref = self.ref
        if ref is None or not ray.wait([ref], timeout=0)[0]:
            return True
        self._conclude(ref)
        return False

    def _conclude(self, ref: Any) -> None:
        """The task ended: how, and, for a death nobody expected, the job's reason."""
        import ray

        error: Exception | None = None
        try:
            ray.get(ref)
        except ray.exceptions.RayError as e:
            error = e
        with self.lock:
            if self.ended:
                return
            self.ended = True
            self.exitcode = 0 if error is None else -signal.SIGKILL if self.killed else 1
            if error is None or self.killed:
                return
            reason = self._redacted(_death_words(error, self.node))
            log.error("job %s: %s", self.id, reason)
            if not (self.stop_asked or self.saved):  # else job_recovery words it (and claims the model)
                self.final = ("failed", f"{reason}; submit the job again (POST /train)")

    def _redacted(self, text: str) -> str:
        store = self.args[1]
        return text.replace(store, redact(store)) if store and is_postgres(store) else text

    def kill(self) -> None:
        import ray

        with self.lock:
            if self.killed or self.ended:
                return
            self.killed, ref = True, self.ref
            if ref is None:  # not launched yet: it never will be
                self.ended, self.exitcode = True, -signal.SIGKILL
                return
        try:
            ray.cancel(ref, force=True, recursive=True)
        except (ray.exceptions.RayError, ValueError) as e:  # it ended meanwhile
            log.debug("job %s: cancel: %s", self.id, e)

    def join(self, timeout: float | None) -> None:
        import ray

        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while self.alive() and time.monotonic() < deadline:
            ref = self.ref
            if ref is None:
                time.sleep(0.05)
            else:
                ray.wait([ref], timeout=max(0.0, min(1.0, deadline - time.monotonic())))

    def ask_stop(self) -> None:
        with self.lock:
            self.stop_asked, flags = True, self.flags
        if flags is not None:
            flags.set.remote(self.id)

    def close(self) -> None:
        """Release the job's queue and its bit (the task has ended: `reap` ran first)."""
        import ray

        if self.flags is not None:
            self.flags.forget.remote(self.id)
        if self.queue is not None:
            try:
                ray.kill(self.queue.actor, no_restart=True)
            except (ray.exceptions.RayError, ValueError):
                pass


def _death_words(error: Exception, node: str | None) -> str:
    """What Ray says of a task that did not return, as a person reads it."""
    import ray

    exc = ray.exceptions
    if isinstance(error, exc.TaskCancelledError):
        what = "was cancelled from outside the service"
    elif isinstance(error, exc.OutOfMemoryError):
        what = "was killed by Ray's memory monitor (its node ran short of memory)"
    elif isinstance(error, exc.NodeDiedError):
        what = "lost its node"
    elif isinstance(error, exc.RayTaskError):
        what, error = "raised an error", error.cause if isinstance(error.cause, Exception) else error
    else:
        what = "died"
    detail = (str(error).strip().splitlines() or [""])[0][:300]
    on = f" on {node}" if node else ""
    return f"the Ray worker running the job{on} {what} ({type(error).__name__}: {detail})"


class RayWorker:
    """The job's task, as `follow` and `reap` see a worker process."""

    def __init__(self, job: _Job) -> None:
        self._job = job

    @property
    def pid(self) -> int | None:
        """The task's process id on its node, once the task said it."""
        return self._job.pid

    @property
    def exitcode(self) -> int | None:
        """None while it runs; 0 when the task returned, -SIGKILL after `kill`, else 1."""
        return self._job.exitcode

    def start(self) -> None:
        self._job.start()

    def is_alive(self) -> bool:
        return self._job.alive()

    def kill(self) -> None:
        self._job.kill()

    def join(self, timeout: float | None = None) -> None:
        self._job.join(timeout)


class RayMessages:
    """The job's messages in the order the task sent them, then the final one it could not
    send; `get_nowait` never waits on Ray (one request stays in flight between calls)."""

    def __init__(self, job: _Job) -> None:
        self._job = job
        self._asked: Any = None

    def get_nowait(self) -> tuple[str, Any]:
        return self.get(block=False)

    def get(self, block: bool = True, timeout: float | None = None) -> tuple[str, Any]:
        wait = (1e9 if timeout is None else timeout) if block else 0.0
        deadline = time.monotonic() + wait
        while True:
            msg = self._next(deadline)
            if msg is None:
                raise queue_mod.Empty
            kind, payload = msg
            if kind == "worker":  # where the task runs: for the worker's pid, not for the job
                self._job.pid, self._job.node = payload["pid"], payload["node"]
                continue
            if kind == "saved":
                self._job.saved = payload
            return kind, payload

    def _next(self, deadline: float) -> tuple[str, Any] | None:
        import ray

        q = self._job.queue
        if q is not None:
            if self._asked is None:
                self._asked = q.actor.get.remote()
            if ray.wait([self._asked], timeout=max(0.0, deadline - time.monotonic()))[0]:
                asked, self._asked = self._asked, None
                try:
                    msg: tuple[str, Any] = ray.get(asked)
                    return msg
                except ray.exceptions.RayError:
                    pass  # the queue is gone: only the final message can be left
        elif deadline > time.monotonic():
            time.sleep(min(0.05, deadline - time.monotonic()))
        with self._job.lock:
            final, self._job.final = self._job.final, None
        return final

    def close(self) -> None:
        self._asked = None
        self._job.close()


class RayStop:
    """The job's stop, as `follow` and the manager see a multiprocessing Event."""

    def __init__(self, job: _Job) -> None:
        self._job = job

    def set(self) -> None:
        self._job.ask_stop()

    def is_set(self) -> bool:
        return self._job.stop_asked
