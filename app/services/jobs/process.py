"""A job's worker process as the parent sees it: spawned, followed, stopped, reaped.

The worker (`job_worker.run`) speaks over a Queue: progress, the model it saved,
then one final message; or it dies without one. What is here is about one worker
and that protocol, nothing about the queue of jobs (`jobs`): relaying progress
without a slow store delaying it, noticing a death within a second (every 0.1 s
a look at its liveness, without blocking the event loop), killing a worker that
ignores a cancel, and never leaving a zombie behind.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from app.services.jobs import worker as job_worker
from app.services.jobs.recovery import STOPPED_BEFORE_START, STOPPED_WHILE_RUNNING
from app.services.jobs.states import FINISHED, JobStatus
from app.services.jobs.store import JobRecord

log = logging.getLogger(__name__)

PROGRESS_WRITE_S = 1.0
POLL_S = 0.1  # how often a monitor looks at its worker: a death is noticed within a second
CANCEL_GRACE_S = 10.0  # a worker that ignores its stop event this long is killed
REAP_S = 5.0  # a worker that sent its last message but does not exit this long is killed


@dataclass
class LiveJob:
    """A queued or running job of this process: its record (the truth) and, once started,
    its worker."""

    record: JobRecord
    proc: Any = None
    stop: Any = None
    cancel_at: float | None = None  # when a cancel was asked for
    task: asyncio.Task[None] | None = None
    saved: str | None = None  # the model the worker wrote, once it says so

    def ask_to_stop(self) -> None:
        """A cancel of a running job: the worker is asked once, and killed by `follow` if it
        ignores that for `CANCEL_GRACE_S`. Call it under the job manager's lock."""
        if self.cancel_at is None:
            self.cancel_at = time.time()
            self.stop.set()
            if self.record.progress is not None:
                self.record.progress = {**self.record.progress, "cancel_requested": True}


class Spawner(Protocol):
    """Makes a job's worker, not started yet, with its message queue and its stop event: a local
    process (`spawn`, the default) or a task on a Ray cluster (`ray_backend`). The worker is
    anything with start/is_alive/kill/join and `exitcode`/`pid`; the queue has get/get_nowait/close;
    the event has set/is_set. `follow` and `reap` need nothing more."""

    def __call__(
        self, record: JobRecord, store_path: str | None, models_dir: str, threads: int, *, gap_s: float
    ) -> tuple[Any, Any, Any]: ...


def local_spawner() -> Spawner:
    """Workers as fresh local processes (spawn: no state inherited from the server)."""
    ctx = mp.get_context("spawn")

    def spawner(
        record: JobRecord, store_path: str | None, models_dir: str, threads: int, *, gap_s: float
    ) -> tuple[Any, Any, Any]:
        return spawn(ctx, record, store_path, models_dir, threads, gap_s=gap_s)

    return spawner


def spawn(
    ctx: Any, record: JobRecord, store_path: str | None, models_dir: str, threads: int, *, gap_s: float
) -> tuple[Any, Any, Any]:
    """The job's worker process (not started yet), its Queue and its stop Event; `gap_s` cuts
    a stored market's ticks into series (`job_worker.run`)."""
    q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(
        target=job_worker.run,
        name=f"tickcast-job-{record.id}",
        daemon=True,
        args=(record.spec, store_path, models_dir, threads, q, stop, record.id, os.getpid(), gap_s),
    )
    return proc, q, stop


async def follow(
    lv: LiveJob, q: Any, lock: threading.RLock, write_progress: Callable[[str, dict[str, Any] | None], bool]
) -> tuple[str, Any]:
    """Relay progress until the worker's final message, or its death ("died", exit code).

    Progress goes to the store at most once a second, in the background: a slow or
    failing store delays neither the relay nor the noticing of a death."""
    written: dict[str, Any] | None = None
    attempt: dict[str, Any] | None = None
    writing: asyncio.Future[bool] | None = None
    next_write = 0.0
    while True:
        final = drain(lv, q, lock)
        if final is not None:
            return final
        if not lv.proc.is_alive():
            # the child flushed its queue before exiting; read what is left
            final = await asyncio.to_thread(drain, lv, q, lock, 0.5)
            return final if final is not None else ("died", lv.proc.exitcode)
        if lv.cancel_at is not None and time.time() - lv.cancel_at > CANCEL_GRACE_S:
            lv.proc.kill()
        if writing is not None and writing.done():
            if not writing.cancelled() and writing.exception() is None and writing.result():
                written = attempt
            writing = None
        progress, now = lv.record.progress, time.monotonic()
        if writing is None and now >= next_write and progress is not written:
            attempt, next_write = progress, now + PROGRESS_WRITE_S
            writing = asyncio.ensure_future(asyncio.to_thread(write_progress, lv.record.id, progress))
        await asyncio.sleep(POLL_S)


def drain(lv: LiveJob, q: Any, lock: threading.RLock, timeout: float = 0.0) -> tuple[str, Any] | None:
    """Take in the worker's messages; its final one is returned, None if none came yet."""
    while True:
        try:
            kind, payload = q.get(timeout=timeout) if timeout else q.get_nowait()
        except (queue_mod.Empty, EOFError, OSError):
            return None
        if kind == "saved":
            lv.saved = payload
        elif kind == "progress":
            if lv.record.progress is None and "epoch" not in payload:
                continue  # progress stays None until training reports (loading data, ...)
            with lock:  # replaced, never mutated: a reader's reference stays valid
                new = {**(lv.record.progress or {}), **payload}
                if payload.get("phase") != "training":
                    new.pop("batch", None), new.pop("num_batches", None)
                lv.record.progress = new
        else:
            return kind, payload


def ending(kind: str, payload: Any, user_cancel: bool) -> tuple[JobStatus, str]:
    """Status and error of a final message that is not a result: a stop that nobody asked
    for by DELETE /jobs/{id} was the service stopping."""
    if kind == "cancelled" and not user_cancel:
        return JobStatus.INTERRUPTED, STOPPED_WHILE_RUNNING
    if kind == "cancelled":
        return JobStatus.CANCELLED, "cancelled while it ran"
    return JobStatus.FAILED, str(payload)


async def shut_down(lives: list[LiveJob], finish: Callable[..., None], grace_s: float) -> None:
    """The service stops: every worker is asked to stop, waited for (`grace_s`, twice at most),
    then killed and reaped; each job is recorded `interrupted` by `finish` (the job manager's,
    which blocks on the store: it runs in a thread), a queued one at once."""
    for lv in lives:
        if lv.proc is None:
            await asyncio.to_thread(
                finish, lv, JobStatus.INTERRUPTED, error=STOPPED_BEFORE_START, now=time.time()
            )
        else:
            lv.stop.set()
    tasks = [lv.task for lv in lives if lv.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=grace_s)
    for lv in lives:
        if lv.proc is not None and lv.proc.is_alive():
            lv.proc.kill()
    if tasks:
        await asyncio.wait(tasks, timeout=grace_s)
    for lv in lives:
        if lv.task is not None and not lv.task.done():
            lv.task.cancel()
        if lv.record.status not in FINISHED:
            await asyncio.to_thread(
                finish, lv, JobStatus.INTERRUPTED, error=STOPPED_WHILE_RUNNING, now=time.time()
            )
        if lv.proc is not None:
            await asyncio.to_thread(reap, lv.proc)


def reap(proc: Any) -> None:
    """Wait for a worker to exit (killing it if it will not), so no zombie or orphan stays."""
    proc.join(REAP_S)
    if proc.is_alive():
        log.warning("worker %s did not exit after its last message; killing it", proc.pid)
        proc.kill()
        proc.join(REAP_S)
