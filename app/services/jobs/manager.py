"""Training jobs: a bounded queue, one worker process per job, dispatch, monitoring, cancel.

Each job runs `job_worker.run` in a "spawn" process (fresh interpreter, low CPU
priority, torch threads capped), so the event loop and /predict stay
responsive while it trains. The parent side is asyncio: a dispatcher starts up
to `concurrency` workers and one monitor task per worker polls its Queue and
its liveness (every 0.1 s, so a dead worker is noticed within a second)
without blocking the loop. At most `queue_max` jobs wait; `submit` refuses
more with `QueueFull`. What it refuses is said in domain words (`jobs.errors`).

The truth about a job is in memory first (`get()` and `list()` show it) and the
job store follows (`records`, over any `store.JobStore`): a store that cannot
be written for a while never stops a job, and the dispatcher starts the next
job regardless. Only `submit` answers a failing store with an error
(`StoreUnavailable`): a job nobody recorded must not be accepted. What a dead
worker, or a dead previous process, left behind is settled by `job_recovery`.
Replicas on one PostgreSQL database (`shared`) each run the jobs submitted to
them, see the others' in the store, and cancel or settle them through it.

The parent decides promotion (`promotion`, `registry.should_promote`) and records it as
`result["activated"]`/`result["reason"]`, then calls `on_finish(record)` with the
final record (in a thread: it may load a model); without `on_finish` it
activates in the registry itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import Any

from app.market.storage import TickStorage
from app.services.jobs import promotion, shared
from app.services.jobs import recovery as job_recovery
from app.services.jobs.backends import open_job_store
from app.services.jobs.errors import JobFinished, QueueFull, UnknownJob
from app.services.jobs.process import LiveJob, Spawner, ending, follow, local_spawner, reap, shut_down
from app.services.jobs.records import JOB_ID, JobTable, StoreUnavailable, copy_record, set_soon
from app.services.jobs.shortfall import check_ticks
from app.services.jobs.spec import InvalidJobSpec, JobSpec, validate_spec
from app.services.jobs.states import FINISHED, JobStatus
from app.services.jobs.store import JobRecord, JobStore
from app.services.registry import Registry

__all__ = [
    "JOB_ID",
    "QUEUE_MAX",
    "InvalidJobSpec",
    "JobFinished",
    "JobManager",
    "JobRecord",
    "JobSpec",
    "QueueFull",
    "StoreUnavailable",
    "UnknownJob",
]

log = logging.getLogger(__name__)

STOP_GRACE_S = 5.0
QUEUE_MAX = 20
QUEUE_RETRY_AFTER_S = 30


class JobManager:
    """Jobs on `store`'s ticks, their models in `registry`, their records in `job_store` (None:
    a `SqliteJobStore` on the tick store's file, which the manager owns: see `close`)."""

    def __init__(
        self,
        store: TickStorage,
        registry: Registry,
        *,
        job_store: JobStore | None = None,
        concurrency: int = 1,
        threads: int = 1,
        queue_max: int = QUEUE_MAX,
        on_finish: Callable[[JobRecord], None] | None = None,
        gap_s: float = 300.0,
        spawner: Spawner | None = None,
    ) -> None:
        """`gap_s`: seconds without a trade that cut a stored market's ticks into separate series
        (`app.services.coverage`), so that no training window spans a gap. `spawner` makes each
        job's worker (None: a local process)."""
        if concurrency < 1 or threads < 1 or queue_max < 1:
            raise ValueError("concurrency, threads and queue_max must be >= 1")
        if not gap_s > 0:  # NaN too
            raise ValueError(f"gap_s must be a positive number of seconds, got {gap_s!r}")
        self.store, self.registry = store, registry
        self._owns_job_store = job_store is None
        self.job_store = open_job_store(store.path) if job_store is None else job_store
        self.concurrency, self.threads, self.on_finish = concurrency, threads, on_finish
        self.queue_max, self.gap_s = queue_max, gap_s
        self.worker_deaths = 0  # workers that died without reporting (a Prometheus counter reads it)
        self._live: dict[str, LiveJob] = {}  # queued and running jobs of this process
        self._reserved = 0  # submissions between the queue check and the queue
        self._lock = threading.RLock()  # guards the dict above, the table's `unsaved`, their records
        self._table = JobTable(self.job_store, self._lock)
        self._shared = shared.for_store(self.job_store)  # None: one process owns the store's jobs
        self._spawner = local_spawner() if spawner is None else spawner
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Settle the jobs a previous process left unfinished; start dispatching."""
        self._loop, self._stopping = asyncio.get_running_loop(), False
        self._wake = asyncio.Event()
        self._table.start()
        if self._shared is None:
            await asyncio.to_thread(self._settle_left_overs)
        else:  # now, then every few seconds: the jobs of replicas that died
            await self._shared.start(self._settle_left_overs, self._live_ids, self.cancel)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="jobs-dispatcher")
        self._wake.set()
        self._table.nudge()

    async def stop(self) -> None:
        """Stop every worker (recorded interrupted), wait for them (bounded), then kill; write
        what the store still lacks (bounded, the rest is logged)."""
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        with self._lock:
            lives = list(self._live.values())
        await shut_down(lives, self._finish, STOP_GRACE_S)
        if self._background:
            # A job that just finished is still reaping its worker and releasing its queue: ended
            # here, not by the process exit (a SIGTERM exit runs no clean-up, and multiprocessing's
            # resource tracker then warns of leaked semaphores).
            await asyncio.wait(set(self._background), timeout=STOP_GRACE_S)
        await self._table.stop(STOP_GRACE_S)
        if self._shared is not None:
            await self._shared.stop()

    def close(self) -> None:
        """Close the job store if the manager opened it (after `stop`, as the tick store), and its
        replicas' connections (which lets the others settle what it left)."""
        if self._shared is not None:
            self._shared.close()
        if self._owns_job_store:
            self.job_store.close()

    # ------------------------------------------------------------ public API

    def submit(self, spec: JobSpec) -> JobRecord:
        """Validate (InvalidJobSpec; TooFewToTrain when the market has too few ticks to train on)
        and queue a job; returns its record. Nothing is recorded when it raises: QueueFull when
        `queue_max` jobs wait, StoreUnavailable when the store cannot count the ticks or record
        the job."""
        spec_dict = validate_spec(spec, data_parallel=getattr(self._spawner, "data_parallel", False))
        try:
            check_ticks(spec, self.store)
        except self.store.errors as e:
            raise StoreUnavailable(
                f"the tick store could not be read to count the ticks of "
                f"{spec.exchange}:{spec.symbol} ({e}); nothing was queued; retry in "
                f"{StoreUnavailable.retry_after_s} s"
            ) from e
        with self._lock:
            waiting = sum(1 for lv in self._live.values() if lv.proc is None) + self._reserved
            if waiting >= self.queue_max:
                raise QueueFull(waiting, self.queue_max, QUEUE_RETRY_AFTER_S)
            self._reserved += 1
        try:
            rec = self._table.create(spec_dict)
        except StoreUnavailable:
            with self._lock:
                self._reserved -= 1
            raise
        with self._lock:
            self._reserved -= 1
            self._live[rec.id] = LiveJob(rec)
        self._poke()
        return copy_record(rec)

    def get(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise UnknownJob(job_id)
        with self._lock:
            rec = self._known(job_id)
            if rec is not None:
                return copy_record(rec)
        stored = self._table.read(job_id)
        if stored is None:
            raise UnknownJob(job_id)
        return stored

    def list(self, limit: int = 100) -> list[JobRecord]:
        """The newest `limit` jobs, newest first, as this process knows them (live progress,
        records the store has not taken yet)."""
        stored = self._table.newest(limit)
        with self._lock:
            known = [self._known(r.id) for r in stored]
            return [copy_record(k) if k is not None else r for k, r in zip(known, stored, strict=True)]

    def cancel(self, job_id: str) -> JobRecord:
        """Queued: cancelled now. Running: asks the worker to stop (it records `cancelled`
        within seconds). Finished: JobFinished, with the record unchanged. Run by another
        replica: that one is asked (`shared`)."""
        rec = self.get(job_id)
        with self._lock:
            lv = self._live.get(job_id)
            if lv is None:
                if rec.status in FINISHED:
                    raise JobFinished(rec)
                if self._shared is None:
                    return rec  # stored unfinished by another process: nothing here to stop
            elif lv.proc is None:  # under the lock: the dispatcher cannot start it meanwhile
                self._settle(lv, JobStatus.CANCELLED, error="cancelled before it started", now=time.time())
            else:
                lv.ask_to_stop()
                return copy_record(lv.record)
        if lv is None:  # another replica runs it: asked through the database, outside the lock
            assert self._shared is not None
            return self._shared.cancel_elsewhere(job_id, self._table.read)
        self._poke()
        self._table.persist(lv.record)
        if self.on_finish is not None:
            promotion.tell(self.on_finish, copy_record(lv.record))
        return copy_record(lv.record)

    def counts(self) -> dict[str, int]:
        """Jobs per status, as this process knows them (records not yet in the store count
        with their real status)."""
        return self._table.counts()

    # ------------------------------------------------------------ dispatching

    def _poke(self) -> None:
        set_soon(self._loop, self._wake)

    async def _dispatch(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._lock:
                running = sum(1 for lv in self._live.values() if lv.proc is not None)
                queued = [lv for lv in self._live.values() if lv.proc is None]
            queued.sort(key=lambda lv: lv.record.created_at)
            for lv in queued[: max(0, self.concurrency - running)]:
                try:
                    self._launch(lv)
                except Exception as e:
                    log.exception("could not start job %s", lv.record.id)
                    error = f"could not start a worker process: {e}"
                    await asyncio.to_thread(self._finish, lv, JobStatus.FAILED, now=time.time(), error=error)

    def _launch(self, lv: LiveJob) -> None:
        store_path = None if self.store.path == ":memory:" else self.store.path
        proc, q, stop = self._spawner(
            lv.record, store_path, str(self.registry.folder), self.threads, gap_s=self.gap_s
        )
        with self._lock:  # a cancel may have taken it meanwhile
            if self._live.get(lv.record.id) is not lv or lv.proc is not None:
                return
            lv.proc, lv.stop = proc, stop
            lv.record.status, lv.record.started_at = JobStatus.RUNNING, time.time()
        try:
            proc.start()
        except BaseException:
            with self._lock:
                lv.proc = None  # so the caller's `failed` is final and stop() does not wait for it
            raise
        lv.task = asyncio.create_task(self._monitor(lv, q), name=f"job-{lv.record.id}")
        self._in_background(lv.task)  # stop() waits for it to reap its worker, even once finished
        self._in_background(asyncio.to_thread(self._table.persist, lv.record))

    def _in_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _monitor(self, lv: LiveJob, q: Any) -> None:
        try:
            await self._conclude(lv, *await follow(lv, q, self._lock, self._table.write_progress))
        except Exception as e:  # a bug must not leave the job "running" or the worker alive
            log.exception("job %s: monitoring failed", lv.record.id)
            lv.proc.kill()
            if lv.record.status not in FINISHED:
                error = f"internal error while following the job: {e}"
                await asyncio.to_thread(self._finish, lv, JobStatus.FAILED, now=time.time(), error=error)
        finally:
            await asyncio.to_thread(reap, lv.proc)  # no zombie, whatever happened above
            with contextlib.suppress(Exception):
                q.close()
            self._poke()

    async def _conclude(self, lv: LiveJob, kind: str, payload: Any) -> None:
        now = time.time()
        user_cancel = lv.cancel_at is not None
        if kind == "result" and user_cancel:
            # finished just as it was stopped: drop the model, it was never activated
            await asyncio.to_thread(job_recovery.drop_model, self.registry, payload["model_id"])
            kind = "cancelled"
        if kind == "result":
            await self._succeed(lv, dict(payload), now)
            return
        result = None
        if kind == "died":
            status, error, result = await asyncio.to_thread(self._after_death, lv, payload, user_cancel)
        else:
            status, error = ending(kind, payload, user_cancel)
        await asyncio.to_thread(self._finish, lv, status, error=error, result=result, now=now)
        if status != JobStatus.INTERRUPTED and self.on_finish is not None:
            await asyncio.to_thread(promotion.tell, self.on_finish, copy_record(lv.record))

    async def _succeed(self, lv: LiveJob, result: dict[str, Any], now: float) -> None:
        ok = promotion.decide(lv.record.id, lv.record.spec["activate"], result, self.registry.active_id())
        rec = dataclasses.replace(lv.record, status=JobStatus.SUCCEEDED, result=result, finished_at=now)
        if ok:
            try:
                await asyncio.to_thread(promotion.activate, self.registry, self.on_finish, rec)
            except Exception as e:
                log.exception("job %s: activation failed", rec.id)
                result["activated"], result["reason"] = False, f"activation failed: {e}"
        await asyncio.to_thread(self._finish, lv, JobStatus.SUCCEEDED, result=result, now=now)
        if self.on_finish is not None and not ok:
            await asyncio.to_thread(promotion.tell, self.on_finish, copy_record(lv.record))

    def _after_death(
        self, lv: LiveJob, code: int | None, user_cancel: bool
    ) -> tuple[JobStatus, str, dict[str, Any] | None]:
        """What a worker that exited without a final message left (`job_recovery`); a death
        that was not asked for is counted and logged."""
        status, error, result = job_recovery.after_death(
            self.registry, lv.record.id, lv.saved, code, user_cancel=user_cancel, stopping=self._stopping
        )
        if status == JobStatus.FAILED:
            with self._lock:
                self.worker_deaths += 1
            log.error("job %s: %s", lv.record.id, error)
        return status, error, result

    def _settle_left_overs(
        self, unfinished: Sequence[JobRecord] | None = None, others: Collection[str] = ()
    ) -> None:
        """What dead processes left: every unfinished record not this process's (read here), or
        with replicas those of `unfinished` that are neither this one's nor `others` (live ones')."""
        with self._lock:
            mine = set(self._live) | set(self._table.unsaved) | set(others)
        job_recovery.settle_left_overs(self._table, self.registry, mine, unfinished)

    def _live_ids(self) -> set[str]:
        with self._lock:
            return set(self._live)

    # ------------------------------------------------------------ records

    def _known(self, job_id: str) -> JobRecord | None:
        lv = self._live.get(job_id)
        return lv.record if lv is not None else self._table.unsaved.get(job_id)

    def _settle(
        self,
        lv: LiveJob,
        status: JobStatus,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        now: float,
    ) -> None:
        """The job's end, in memory: it leaves the queue now; the store follows (`JobTable.persist`)."""
        with self._lock:
            r = lv.record
            r.status, r.error, r.finished_at = status, error, now
            if result is not None:
                r.result = result
            self._live.pop(r.id, None)
            self._table.unsaved[r.id] = r  # what get() shows until the store has it

    def _finish(
        self,
        lv: LiveJob,
        status: JobStatus,
        *,
        error: str | None = None,
        result: dict[str, Any] | None = None,
        now: float,
    ) -> None:
        """Record the job's end; the next job starts whether or not the store takes it now.
        Blocks on the store: call it from a thread when on the loop."""
        self._settle(lv, status, error=error, result=result, now=now)
        self._poke()
        self._table.persist(lv.record)
