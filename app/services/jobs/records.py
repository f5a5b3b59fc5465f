"""Job records: the truth in memory first, the job store follows.

A store that cannot be written for a while (locked, read-only, a failing disk)
must never stop a job, nor lose what it did. So a record whose latest state the
store did not take stays in `JobTable.unsaved` (what the job manager shows for
it), and a background task writes it again with backoff until it lands; at
stop, what still cannot be written goes to the log, the last place left for it.
Progress writes are not kept: the next one (a second later) carries the newest.
Only reads that nothing in memory can answer fail, with `StoreUnavailable`.
All of this holds whatever the backend (`store.JobStore`): it is written here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import re
import threading
import time
from typing import Any

from app.services.jobs.states import JobStatus
from app.services.jobs.store import JobRecord, JobStore, JobStoreError

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[0-9a-f]{12}$")
RETRY_MIN_S, RETRY_MAX_S = 0.25, 5.0  # backoff of the writes of records that did not land
STORE_RETRY_AFTER_S = 5


class StoreUnavailable(RuntimeError):
    """The job store cannot be read or written right now; nothing was changed."""

    retry_after_s = STORE_RETRY_AFTER_S


def set_soon(loop: asyncio.AbstractEventLoop | None, event: asyncio.Event | None) -> None:
    """Set an event of `loop` from its own thread or any other (a no-op before it runs)."""
    if loop is None or event is None or loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        event.set()
    else:
        loop.call_soon_threadsafe(event.set)


class JobTable:
    """The job store, and the records it has not taken yet (`unsaved`).

    `lock` is the job manager's: it guards `unsaved` and the records in it (the manager
    changes them under it). Writes are serialised by a lock of their own, never taken
    under `lock`.
    """

    def __init__(self, store: JobStore, lock: threading.RLock) -> None:
        self.store = store
        self.unsaved: dict[str, JobRecord] = {}  # records whose latest state is not in the store
        self._lock = lock
        self._wlock = threading.Lock()
        self._down = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dirty: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """On the event loop: start writing, with backoff, what the store refused."""
        self._loop, self._dirty = asyncio.get_running_loop(), asyncio.Event()
        self._flusher = asyncio.create_task(self._flush_loop(), name="jobs-flusher")

    def nudge(self) -> None:
        """Have the flusher look now, if records wait (one kept before it started)."""
        with self._lock:
            if self.unsaved and self._dirty is not None:
                self._dirty.set()

    async def stop(self, grace_s: float) -> None:
        """Write what the store still lacks, for at most `grace_s`; log the rest."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        deadline = time.monotonic() + grace_s
        while not await asyncio.to_thread(self.flush):
            if time.monotonic() > deadline:
                with self._lock:
                    lost = [copy_record(r) for r in self.unsaved.values()]
                for r in lost:  # the log is the last place the truth can go
                    log.error(
                        "job %s: its record could not be written to the store; it was %s",
                        r.id,
                        json.dumps(dataclasses.asdict(r)),
                    )
                return
            await asyncio.sleep(RETRY_MIN_S)

    # ------------------------------------------------------------ writes

    def keep(self, r: JobRecord) -> bool:
        """Hold the record as the truth until the store has it, and write it now."""
        with self._lock:
            self.unsaved[r.id] = r
        return self.persist(r)

    def persist(self, r: JobRecord) -> bool:
        """Write the record's current state; if the store refuses, keep it for the flusher."""
        with self._wlock:  # snapshot inside: the last write is always the newest state
            with self._lock:
                snap = copy_record(r)
            try:
                self.write(snap)
            except Exception as e:
                with self._lock:
                    self.unsaved[r.id] = r
                self._failed(e, f"job {r.id} ({snap.status})")
                set_soon(self._loop, self._dirty)
                return False
            with self._lock:  # unless it changed since: its own persist call follows
                if self.unsaved.get(r.id) is r and (r.status, r.finished_at) == (
                    snap.status,
                    snap.finished_at,
                ):
                    del self.unsaved[r.id]
        self._recovered()
        return True

    def flush(self) -> bool:
        """Write every record the store lacks; False at the first that still fails."""
        with self._lock:
            todo = list(self.unsaved.values())
        return all(self.persist(r) for r in todo)

    async def _flush_loop(self) -> None:
        assert self._dirty is not None
        delay = RETRY_MIN_S
        while True:
            await self._dirty.wait()
            await asyncio.sleep(delay)
            if await asyncio.to_thread(self.flush):
                delay = RETRY_MIN_S
                with self._lock:
                    if not self.unsaved:
                        self._dirty.clear()
            else:
                delay = min(delay * 2, RETRY_MAX_S)

    def write_progress(self, job_id: str, progress: dict[str, Any] | None) -> bool:
        try:
            self.store.put_progress(job_id, progress)  # never over a finished record
        except Exception as e:  # kept in memory; the next write (in a second) retries
            self._failed(e, f"the progress of job {job_id}")
            return False
        self._recovered()
        return True

    def create(self, spec: dict[str, Any]) -> JobRecord:
        """A new `queued` record, in the store now, or StoreUnavailable (nothing was written)."""
        rec = JobRecord(
            os.urandom(6).hex(), JobStatus.QUEUED, spec, None, None, None, time.time(), None, None
        )
        try:
            self.write(rec)
        except JobStoreError as e:
            raise StoreUnavailable(
                f"the job could not be recorded: the store failed ({e}); "
                f"nothing was queued; retry in {STORE_RETRY_AFTER_S} s"
            ) from e
        return rec

    def write(self, r: JobRecord) -> None:
        """One record, now; raises what the store raises."""
        self.store.put(r)

    def _failed(self, e: BaseException, what: str) -> None:
        if not isinstance(e, JobStoreError):
            log.error("could not write %s", what, exc_info=e)
        if not self._down:
            self._down = True
            log.error(
                "the store refused a write (%s: %s); job records are kept in memory and "
                "written when it accepts them again",
                what,
                e,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            log.warning("the store accepts job records again")

    # ------------------------------------------------------------ reads

    def read(self, job_id: str) -> JobRecord | None:
        """The stored record (StoreUnavailable if the store cannot be read)."""
        try:
            return self.store.get(job_id)
        except JobStoreError as e:
            raise unreadable(e) from e

    def newest(self, limit: int) -> list[JobRecord]:
        """The newest `limit` stored records, newest first (StoreUnavailable if unreadable)."""
        try:
            return self.store.newest(limit)
        except JobStoreError as e:
            raise unreadable(e) from e

    def counts(self) -> dict[str, int]:
        """Jobs per status, the records not yet in the store counted with their real status
        (StoreUnavailable if the store cannot be read)."""
        with self._lock:
            pending = {jid: r.status for jid, r in self.unsaved.items()}
        try:
            got, stored = self.store.counts(list(pending))
        except JobStoreError as e:
            raise unreadable(e) from e
        for jid, status in stored.items():
            got[status] = got.get(status, 0) - 1
            got[pending[jid]] = got.get(pending[jid], 0) + 1
        return {s.value: got.get(s, 0) for s in JobStatus}


def unreadable(e: JobStoreError) -> StoreUnavailable:
    return StoreUnavailable(f"the job store cannot be read right now ({e}); retry in {STORE_RETRY_AFTER_S} s")


def copy_record(r: JobRecord) -> JobRecord:
    """A deep copy: what callers get can never change under them, nor change the original."""
    return dataclasses.replace(
        r,
        spec=json.loads(json.dumps(r.spec)),
        progress=json.loads(json.dumps(r.progress)),
        result=json.loads(json.dumps(r.result)),
    )
