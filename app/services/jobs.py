"""Training jobs: a queue, one worker process per job, records in the store, cancel.

Each job runs `job_worker.run` in a "spawn" process (fresh interpreter, torch
threads capped), so the event loop and /predict stay responsive while it
trains. The parent side is asyncio: a dispatcher starts up to `concurrency`
workers and one monitor task per worker polls its Queue without blocking the
loop. Records live in the store's `jobs` table; the latest progress is kept in
memory (what `get()` shows) and written to the table at most once a second. A
job left `running`/`queued` by a process that died is marked `interrupted` by
the next `start()`.

The parent decides promotion (`registry.should_promote`) and records it as
`result["activated"]`/`result["reason"]`, then calls `on_finish(record)` with the
final record (in a thread: it may load a model); without `on_finish` it
activates in the registry itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import multiprocessing as mp
import os
import queue as queue_mod
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from app.market.store import TickStore
from app.services import job_worker
from app.services.job_worker import JobSpec, validate_spec
from app.services.registry import Registry, should_promote

log = logging.getLogger(__name__)

Status = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
STATUSES: tuple[str, ...] = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
JOB_ID = re.compile(r"^[0-9a-f]{12}$")
STOPPED_WHILE_RUNNING = "the service stopped while it ran"
STOPPED_BEFORE_START = "the service stopped before the job started"
PROGRESS_WRITE_S = 1.0
CANCEL_GRACE_S = 10.0  # a worker that ignores its stop event this long is killed
STOP_GRACE_S = 5.0
_COLUMNS = "id, status, spec, progress, result, error, created_at, started_at, finished_at"


class UnknownJob(LookupError):
    """No job with that id (or the id is malformed)."""


@dataclass
class JobRecord:
    id: str
    status: Status
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


@dataclass
class _Live:
    record: JobRecord
    proc: Any = None
    stop: Any = None
    cancel_at: float | None = None  # when a cancel was asked for
    task: asyncio.Task[None] | None = None


class JobManager:
    def __init__(self, store: TickStore, registry: Registry, *, concurrency: int = 1,
                 threads: int = 1, on_finish: Callable[[JobRecord], None] | None = None) -> None:
        if concurrency < 1 or threads < 1:
            raise ValueError("concurrency and threads must be >= 1")
        self.store, self.registry = store, registry
        self.concurrency, self.threads, self.on_finish = concurrency, threads, on_finish
        self._live: dict[str, _Live] = {}  # queued and running jobs of this process
        self._lock = threading.RLock()
        self._ctx = mp.get_context("spawn")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Mark jobs a previous process left queued/running as interrupted; start dispatching."""
        self._loop, self._wake, self._stopping = asyncio.get_running_loop(), asyncio.Event(), False
        with self._lock:
            mine = list(self._live)
        now = time.time()
        sql = ("UPDATE jobs SET status = 'interrupted', error = ?, finished_at = ? WHERE status = ?"
               f" AND id NOT IN ({'?, ' * len(mine)}'')")
        with self.store.transaction() as db:
            for status, msg in (("running", STOPPED_WHILE_RUNNING),
                                ("queued", STOPPED_BEFORE_START)):
                db.execute(sql, (msg, now, status, *mine))
        self._dispatcher = asyncio.create_task(self._dispatch(), name="jobs-dispatcher")
        self._wake.set()

    async def stop(self) -> None:
        """Stop every worker (recorded interrupted), wait for them (bounded), then kill."""
        self._stopping = True
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._dispatcher
        with self._lock:
            lives = list(self._live.values())
        now = time.time()
        for lv in lives:
            if lv.proc is None:
                self._finish(lv, "interrupted", error=STOPPED_BEFORE_START, now=now)
            else:
                lv.stop.set()
        tasks = [lv.task for lv in lives if lv.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for lv in lives:
            if lv.proc is not None and lv.proc.is_alive():
                lv.proc.kill()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE_S)
        for lv in lives:
            if lv.task is not None and not lv.task.done():
                lv.task.cancel()
            if lv.record.status in ("queued", "running"):
                self._finish(lv, "interrupted", error=STOPPED_WHILE_RUNNING, now=time.time())
            if lv.proc is not None:
                await asyncio.to_thread(lv.proc.join, 2.0)

    # ------------------------------------------------------------ public API

    def submit(self, spec: JobSpec) -> JobRecord:
        """Validate (ValueError, nothing recorded) and queue a job; returns its record."""
        spec_dict = validate_spec(spec)
        rec = JobRecord(os.urandom(6).hex(), "queued", spec_dict, None, None, None, time.time(),
                        None, None)
        with self._lock:
            self._write(rec)
            self._live[rec.id] = _Live(rec)
        self._poke()
        return _copy(rec)

    def get(self, job_id: str) -> JobRecord:
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
            raise UnknownJob(f"no job {str(job_id)[:40]!r}; job ids are 12 hex digits")
        with self._lock:
            lv = self._live.get(job_id)
            if lv is not None:
                return _copy(lv.record)
        with self.store.transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(f"no job {job_id!r}; GET /jobs lists the jobs")
        return _record(row)

    def list(self, limit: int = 100) -> list[JobRecord]:
        """The newest `limit` jobs, newest first, with live progress for running ones."""
        with self.store.transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY created_at DESC, rowid DESC"
                              " LIMIT ?", (max(0, int(limit)),)).fetchall()
        with self._lock:
            return [_copy(self._live[r[0]].record) if r[0] in self._live else _record(r)
                    for r in rows]

    def cancel(self, job_id: str) -> JobRecord:
        """Queued: cancelled now. Running: asks the worker to stop (it records `cancelled`
        within seconds). Finished: returned unchanged."""
        rec = self.get(job_id)
        with self._lock:
            lv = self._live.get(job_id)
            if lv is None:
                return rec
            if lv.proc is None:
                self._finish(lv, "cancelled", error="cancelled before it started", now=time.time())
                if self.on_finish is not None:
                    self._safe_on_finish(_copy(lv.record))
            elif lv.cancel_at is None:
                lv.cancel_at = time.time()
                lv.stop.set()
                if lv.record.progress is not None:
                    lv.record.progress = {**lv.record.progress, "cancel_requested": True}
            return _copy(lv.record)

    def counts(self) -> dict[str, int]:
        with self.store.transaction() as db:
            got = dict(db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
        return {s: int(got.get(s, 0)) for s in STATUSES}

    # ------------------------------------------------------------ dispatching

    def _poke(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

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
                    self._finish(lv, "failed", error=f"could not start a worker process: {e}",
                                 now=time.time())

    def _launch(self, lv: _Live) -> None:
        store_path = None if self.store.path == ":memory:" else self.store.path
        q, stop = self._ctx.Queue(), self._ctx.Event()
        proc = self._ctx.Process(
            target=job_worker.run, name=f"tickcast-job-{lv.record.id}", daemon=True,
            args=(lv.record.spec, store_path, str(self.registry.folder), self.threads, q, stop))
        proc.start()
        with self._lock:
            lv.proc, lv.stop = proc, stop
            lv.record.status, lv.record.started_at = "running", time.time()
            self._write(lv.record)
        lv.task = asyncio.create_task(self._monitor(lv, q), name=f"job-{lv.record.id}")

    async def _monitor(self, lv: _Live, q: Any) -> None:
        try:
            await self._conclude(lv, *await self._follow(lv, q))
        except Exception as e:  # a bug or a store error must not leave the job "running"
            log.exception("job %s: monitoring failed", lv.record.id)
            lv.proc.kill()
            self._finish(lv, "failed", error=f"internal error while following the job: {e}",
                         now=time.time())
        finally:
            with contextlib.suppress(Exception):
                q.close()
            self._poke()

    async def _follow(self, lv: _Live, q: Any) -> tuple[str, Any]:
        """Relay progress until the worker's final message (or its death); reap it."""
        written, written_at = None, 0.0
        while True:
            final = self._drain(lv, q)
            if final is not None:
                break
            if not lv.proc.is_alive():
                    # the child flushed its queue before exiting; read what is left
                final = await asyncio.to_thread(self._drain, lv, q, 0.5)
                if final is None:
                    final = ("failed", f"worker exited with code {lv.proc.exitcode} without a "
                             "result (killed, or out of memory?); see the service log")
                break
            if lv.cancel_at is not None and time.time() - lv.cancel_at > CANCEL_GRACE_S:
                lv.proc.kill()
            now = time.time()
            if now - written_at >= PROGRESS_WRITE_S and lv.record.progress is not written:
                written_at, written = now, lv.record.progress
                await asyncio.to_thread(self._write_progress, lv.record.id, _dumps(written))
            await asyncio.sleep(0.1)
        await asyncio.to_thread(lv.proc.join, 5.0)
        return final

    def _drain(self, lv: _Live, q: Any, timeout: float = 0.0) -> tuple[str, Any] | None:
        while True:
            try:
                kind, payload = q.get(timeout=timeout) if timeout else q.get_nowait()
            except (queue_mod.Empty, EOFError, OSError):
                return None
            if kind == "progress":
                if lv.record.progress is None and "epoch" not in payload:
                    continue  # progress stays None until training reports (loading data, ...)
                with self._lock:  # replaced, never mutated: a reader's reference stays valid
                    new = {**(lv.record.progress or {}), **payload}
                    if payload.get("phase") != "training":
                        new.pop("batch", None), new.pop("num_batches", None)
                    lv.record.progress = new
            else:
                return kind, payload

    async def _conclude(self, lv: _Live, kind: str, payload: Any) -> None:
        now = time.time()
        user_cancel = lv.cancel_at is not None
        if kind == "result" and user_cancel:
            # finished just as it was stopped: drop the model, it was never activated
            with contextlib.suppress(Exception):
                self.registry.path(payload["model_id"]).unlink(missing_ok=True)
            kind = "cancelled"
        if kind == "result":
            result = dict(payload)
            policy, active = lv.record.spec["activate"], self.registry.active_id()
            ok, reason = should_promote(policy, result["challenger_val_auc"],
                                        result["incumbent_val_auc"])
            if policy == "if_better" and active != result["incumbent_id"]:
                ok, reason = False, (f"the active model changed while the job ran (compared "
                                     f"with {result['incumbent_id']}, now {active}); activate "
                                     "it by hand if wanted")
            result["activated"], result["reason"] = ok, reason
            rec = dataclasses.replace(lv.record, status="succeeded", result=result,
                                      finished_at=now)
            if ok:
                try:
                    await asyncio.to_thread(self._activate, rec)
                except Exception as e:
                    log.exception("job %s: activation failed", rec.id)
                    result["activated"], result["reason"] = False, f"activation failed: {e}"
            self._finish(lv, "succeeded", result=result, now=now)
            if self.on_finish is not None and not ok:
                await asyncio.to_thread(self._safe_on_finish, _copy(lv.record))
            return
        if kind == "cancelled" and not user_cancel:
            status, error = "interrupted", STOPPED_WHILE_RUNNING
        elif kind == "cancelled":
            status, error = "cancelled", "cancelled while it ran"
        else:
            status, error = "failed", str(payload)
            if self._stopping and error.startswith("worker exited"):
                status, error = "interrupted", STOPPED_WHILE_RUNNING
        self._finish(lv, status, error=error, now=now)
        if status != "interrupted" and self.on_finish is not None:
            await asyncio.to_thread(self._safe_on_finish, _copy(lv.record))

    def _activate(self, rec: JobRecord) -> None:
        if self.on_finish is not None:
            self.on_finish(_copy(rec))
        else:
            self.registry.activate(rec.result["model_id"])  # type: ignore[index]

    def _safe_on_finish(self, rec: JobRecord) -> None:
        try:
            self.on_finish(rec)  # type: ignore[misc]
        except Exception:
            log.exception("job %s: on_finish failed", rec.id)

    # ------------------------------------------------------------ records

    def _finish(self, lv: _Live, status: Status, *, error: str | None = None,
                result: dict[str, Any] | None = None, now: float) -> None:
        with self._lock:
            r = lv.record
            r.status, r.error, r.finished_at = status, error, now
            if result is not None:
                r.result = result
            self._write(r)
            self._live.pop(r.id, None)
        self._poke()

    def _write_progress(self, job_id: str, progress: str | None) -> None:
        with self.store.transaction() as db:  # never over a finished record
            db.execute("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'",
                       (progress, job_id))

    def _write(self, r: JobRecord) -> None:
        with self.store.transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO jobs ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (r.id, r.status, json.dumps(r.spec), _dumps(r.progress), _dumps(r.result),
                 r.error, r.created_at, r.started_at, r.finished_at))


def _dumps(v: Any) -> str | None:
    return None if v is None else json.dumps(v)


def _copy(r: JobRecord) -> JobRecord:
    return dataclasses.replace(r, spec=json.loads(json.dumps(r.spec)),
                               progress=json.loads(json.dumps(r.progress)),
                               result=json.loads(json.dumps(r.result)))


def _record(row: tuple[Any, ...]) -> JobRecord:
    jid, status, spec, progress, result, error, created, started, finished = row
    return JobRecord(jid, status, json.loads(spec), progress and json.loads(progress),
                     result and json.loads(result), error, created, started, finished)
