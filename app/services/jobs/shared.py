"""Jobs across replicas: several service processes on one PostgreSQL database, each with its own
JobManager, each running the jobs submitted to it (its queue limit and concurrency are its own).

A replica sees every job: the store is shared, and a job another replica runs is read from it,
with the progress its owner writes once a second. What this module adds is what the store alone
cannot say:

- **Who runs a job, and whether it is still alive.** Every job manager has an owner id (its
  `PgJobStore`'s, stored with each job it inserts) and holds a session-level advisory lock on
  it, on a connection of its own, for as long as it lives. A process that dies, `kill -9`
  included, loses its connection and so its lock: any other replica that can take the lock
  knows the owner is gone, and settles its jobs as `interrupted` (at its start, then every
  `SWEEP_S`), holding that lock meanwhile so that two replicas never settle the same job. Jobs
  of a live owner are left alone.
- **A cancel asked of the wrong replica.** DELETE /jobs/{id} on a replica that does not run the
  job records the request in the job's row (`cancel_requested_at`) and sends a NOTIFY on
  `CHANNEL`; the owner hears it (and polls its jobs' rows every `CANCEL_POLL_S` in case a
  notification was lost) and cancels the job exactly as a local DELETE would.

A database restart drops every replica's lock at once. A replica that has just taken its own
lock again waits `REGAIN_GRACE_S` before it judges others, so that they take theirs again
first (each one checks its lock every `KEEP_S`). A replica started in the first seconds after a
restart may still find a live one unlocked and interrupt its jobs; that replica's own record of
how the job ended still lands when the job ends, over the `interrupted`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING, Any

from app import pg
from app.services.jobs.errors import JobFinished, UnknownJob
from app.services.jobs.pg import UNFINISHED, PgJobStore, failures, message, open_connection
from app.services.jobs.records import STORE_RETRY_AFTER_S, StoreUnavailable, set_soon
from app.services.jobs.states import FINISHED
from app.services.jobs.store import COLUMNS, JobRecord, JobStore, JobStoreError, from_row

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

CHANNEL = "tickcast_jobs"  # payload: the id of a job whose cancel was asked for
CANCEL_POLL_S = 1.0  # a replica looks at its jobs' rows for cancel requests this often
CANCEL_WAIT_S = 2.0  # a cancel asked of another replica waits this long for the job to end
KEEP_S = 1.0  # a replica checks that it still holds its lock this often
SWEEP_S = 5.0  # and looks for the jobs of replicas that died this often
REGAIN_GRACE_S = 10.0  # after taking its lock again, it judges no other replica this long

Settle = Callable[[list[JobRecord], set[str]], None]  # (unfinished records, ids of live owners' jobs)


def for_store(store: JobStore) -> Replicas | None:
    """The replicas' side of a job store: None for a store only one process uses (SQLite)."""
    return Replicas(store.url, store.owner) if isinstance(store, PgJobStore) else None


def owner_key(owner: str) -> int:
    """The advisory lock key of an owner id: 64 bits of its hash, as PostgreSQL's signed bigint."""
    return int.from_bytes(
        hashlib.blake2b(f"tickcast-jobs:{owner}".encode(), digest_size=8).digest(), "big", signed=True
    )


class Replicas:
    """One job manager's part among replicas: its owner lock (taken here: JobStoreError when the
    database cannot be reached), the sweep of dead replicas' jobs, cancel requests both ways."""

    def __init__(self, url: str, owner: str) -> None:
        self.url, self.owner, self._key = url, owner, owner_key(owner)
        self._owner_lock = threading.Lock()  # the owner connection: this lock, liveness tests
        self._owner_conn: psycopg.Connection[Any] | None = None
        self._regained_at: float | None = None  # when the lock was taken again after a loss
        self._query_lock = threading.Lock()  # the connection for cancel requests
        self._query_conn: psycopg.Connection[Any] | None = None
        self._down = False
        self._honoured: set[str] = set()  # jobs of this replica a cancel request reached already
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._listener: pg.Listener | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        try:
            with self._owner_lock:
                self._owner()
        except failures() as e:
            raise JobStoreError(message(e)) from e

    # ------------------------------------------------------------ lifecycle

    async def start(
        self, settle: Settle, live: Callable[[], Collection[str]], cancel: Callable[[str], JobRecord]
    ) -> None:
        """On the event loop: settle what dead replicas left (now, then every `SWEEP_S`), and
        cancel (`cancel`, the manager's) this replica's jobs (`live`) another one asks to."""
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        await asyncio.to_thread(self.sweep, settle, always=True)
        self._listener = pg.Listener(self.url, (CHANNEL,), self._heard, part="jobs-listener")
        self._listener.start()
        self._tasks = [
            asyncio.create_task(self._watch_cancels(live, cancel), name="jobs-cancel-requests"),
            asyncio.create_task(self._keep(settle), name="jobs-owner-lock"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None

    def close(self) -> None:
        """Close the connections: the owner lock goes with its own (after `stop`, after the
        manager wrote its jobs' last records, so nobody settles them meanwhile)."""
        self._closed = True
        for lock, attr in ((self._query_lock, "_query_conn"), (self._owner_lock, "_owner_conn")):
            with lock:
                conn = getattr(self, attr)
                if conn is not None:
                    conn.close()
                    setattr(self, attr, None)

    # ------------------------------------------------------------ dead replicas

    def sweep(self, settle: Settle, *, always: bool = False) -> None:
        """Hand `settle` the unfinished records, with the ids of those whose owner lives (this
        replica included), while holding the locks of the dead owners; `always`: even when no
        owner died (at start: the manager also matches models to finished jobs then)."""
        with self._owner_lock:
            try:
                conn = self._owner()
                if not always and self._regained_at is not None:
                    if time.monotonic() - self._regained_at < REGAIN_GRACE_S:
                        return  # the others may not have their locks back yet
                rows, dead = self._orphans(conn, always)
            except failures() as e:
                self._failed(e)
                return
            try:
                if rows is not None:
                    records = [from_row(r) for r in rows]
                    alive = {r[0] for r in rows if r[9] is not None and owner_key(r[9]) not in dead}
                    if len(alive) < len(records):
                        log.warning("settling %d job(s) of replicas that stopped", len(records) - len(alive))
                    settle(records, alive)
                self._up()
            finally:
                self._release(conn, dead)

    def _orphans(self, conn: psycopg.Connection[Any], always: bool) -> tuple[list[Any] | None, set[int]]:
        """The unfinished rows (None when no owner died and not `always`) and the keys of the
        dead owners, now held."""
        owners = [
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT owner FROM jobs WHERE status IN (%s, %s)", UNFINISHED
            ).fetchall()
        ]
        dead: set[int] = set()
        try:
            for owner in owners:
                if owner is not None and owner != self.owner:
                    key = owner_key(owner)
                    if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone() == (True,):
                        dead.add(key)
            if not (always or dead or None in owners):
                return None, dead
            q = f"SELECT {COLUMNS}, owner FROM jobs WHERE status IN (%s, %s)"
            return conn.execute(q, UNFINISHED).fetchall(), dead
        except BaseException:
            self._release(conn, dead)
            raise

    def _release(self, conn: psycopg.Connection[Any], keys: set[int]) -> None:
        for key in keys:
            with contextlib.suppress(*failures()):  # a lost connection released them already
                conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def _owner(self) -> psycopg.Connection[Any]:
        """The connection that holds this replica's lock; after a loss, a new one that took it
        again. Call it under `_owner_lock`."""
        conn = self._owner_conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if self._closed:  # closed by its manager: this replica is gone, and lets others know
            raise pg.driver().OperationalError("the job replicas' connections are closed")
        regained = conn is not None
        if conn is not None:
            conn.close()
            self._owner_conn = None
        conn = open_connection(self.url, "jobs-owner")
        try:
            got = conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
        except BaseException:
            conn.close()
            raise
        if got != (True,):  # another replica is settling this one's jobs, believing it dead
            conn.close()
            raise pg.driver().OperationalError(f"the lock of job owner {self.owner} is held elsewhere")
        self._owner_conn = conn
        if regained:
            self._regained_at = time.monotonic()
            log.warning("job owner %s: took its lock again after losing its connection", self.owner)
        return conn

    async def _keep(self, settle: Settle) -> None:
        """Check the owner lock every `KEEP_S` (taking it again after a loss); sweep every `SWEEP_S`."""
        ticks = 0
        while True:
            await asyncio.sleep(KEEP_S)
            ticks += 1
            try:
                if ticks * KEEP_S >= SWEEP_S:
                    ticks = 0
                    await asyncio.to_thread(self.sweep, settle)
                else:
                    await asyncio.to_thread(self._check_lock)
            except Exception:  # a bug must not end the sweeps
                log.exception("job replicas: checking the owner lock or sweeping failed")

    def _check_lock(self) -> None:
        with self._owner_lock:
            try:
                try:
                    self._owner().execute("SELECT 1")
                except failures():  # lost just now: a new connection takes the lock again at once
                    self._owner().execute("SELECT 1")
                self._up()
            except failures() as e:
                self._failed(e)

    # ------------------------------------------------------------ cancels

    def cancel_elsewhere(self, job_id: str, read: Callable[[str], JobRecord | None]) -> JobRecord:
        """DELETE /jobs/{id} for a job this replica does not run: the request is recorded for its
        owner, and the job as it is after at most `CANCEL_WAIT_S` is returned (a queued one ends
        at once; a running one says `cancel_requested` in its progress while it stops).
        JobFinished when it had finished before; StoreUnavailable when nothing could be recorded.
        It blocks meanwhile: call it from a thread (the routes run in FastAPI's thread pool)."""
        try:
            with self._query() as db:
                asked = db.execute(
                    "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, %s)"
                    " WHERE id = %s AND status IN (%s, %s) RETURNING owner",
                    (time.time(), job_id, *UNFINISHED),
                ).fetchone()
                if asked is not None:
                    db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, job_id))  # sent on commit
        except failures() as e:
            raise StoreUnavailable(
                f"the cancel could not be recorded: the store failed ({message(e)}); "
                f"nothing was changed; retry in {STORE_RETRY_AFTER_S} s"
            ) from e
        deadline = time.monotonic() + CANCEL_WAIT_S
        while True:
            rec = read(job_id)
            if rec is None:
                raise UnknownJob(job_id)
            if rec.status in FINISHED:
                if asked is None:
                    raise JobFinished(rec)
                return rec
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        if rec.progress is not None:
            rec.progress = {**rec.progress, "cancel_requested": True}
        return rec

    def cancel_requests(self, ids: Collection[str]) -> list[str]:
        """Those of `ids` (this replica's unfinished jobs) another replica asked to cancel."""
        with self._query() as db:
            rows = db.execute(
                "SELECT id FROM jobs WHERE id = ANY(%s) AND cancel_requested_at IS NOT NULL", (list(ids),)
            ).fetchall()
        return [r[0] for r in rows]

    async def _watch_cancels(
        self, live: Callable[[], Collection[str]], cancel: Callable[[str], JobRecord]
    ) -> None:
        """Every `CANCEL_POLL_S`, or at once on a notification: cancel the jobs asked for."""
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), CANCEL_POLL_S)
            self._wake.clear()
            ids = set(live())
            self._honoured &= ids
            todo = ids - self._honoured
            if not todo:
                continue
            try:
                asked = await asyncio.to_thread(self.cancel_requests, todo)
            except failures() as e:
                self._failed(e)
                continue
            for job_id in asked:
                self._honoured.add(job_id)
                log.info("job %s: cancelled at the request of another replica", job_id)
                try:
                    await asyncio.to_thread(cancel, job_id)
                except (JobFinished, UnknownJob):
                    pass  # it ended meanwhile
                except StoreUnavailable:
                    self._honoured.discard(job_id)  # asked again at the next look
                except Exception:  # a bug must not end the watch
                    log.exception("job %s: cancelling it failed", job_id)

    def _heard(self, channel: str, payload: str | None) -> None:
        """A notification (None: the listener reconnected and may have missed some): look now."""
        set_soon(self._loop, self._wake)

    @contextlib.contextmanager
    def _query(self) -> Iterator[psycopg.Connection[Any]]:
        with self._query_lock:
            conn = self._query_conn
            if conn is None or conn.closed or conn.broken:
                conn = self._query_conn = open_connection(self.url, "jobs-replicas")
            with conn.transaction():
                yield conn

    # ------------------------------------------------------------ outages, said once

    def _failed(self, e: BaseException) -> None:
        if not self._down:
            self._down = True
            log.error("job replicas: the database cannot be reached (%s); retrying", message(e))

    def _up(self) -> None:
        if self._down:
            self._down = False
            log.warning("job replicas: the database answers again")
