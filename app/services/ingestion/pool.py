"""The ingest worker process, supervised: a death is noticed, recorded, counted and repaired.

A ProcessPoolExecutor whose worker dies (kill -9, the kernel's OOM killer, a crash in a C
extension) is broken for good: every later submit raises BrokenProcessPool. Left alone,
that stopped ingestion for good while every status said all was well. Here a death is
noticed by whichever sees it first, a call waiting on the worker or `poll()` (which the
scheduler runs every second, pulls or not), and handled once: the reason (exit code or
signal) goes to `on_death`, `restarts` goes up, the broken pool is dropped and a
replacement starts at once. While it starts, and during the back-off after deaths in a
row, `run` refuses with `WorkerDown`, which says why and when to retry.

A pull that was running when its worker died loses nothing: each page commits with its
cursor in one transaction, so the next pull resumes where the stored data ends. It is not
retried at once on the new worker: the pull may be what killed it (out of memory on a big
backfill), and the schedule tries again one interval later anyway.
"""

from __future__ import annotations

import asyncio
import logging
import math
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing.connection import wait as wait_ready
from multiprocessing.process import BaseProcess
from typing import Any, TypeVar

from app.services.ingestion import worker as ingest_worker

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# The pause before the restart after the n-th death in a row (no call answered in between):
# a worker that dies as it starts, or on every pull, is not respawned in a tight loop.
BACKOFF_S = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0)
STARTUP_S = 3.0  # what a worker's start is assumed to take until one has been timed


class WorkerDown(RuntimeError):
    """The ingest worker is dead or restarting, so nothing was pulled; retry in `retry_after_s`."""

    def __init__(self, reason: str, retry_after_s: int) -> None:
        super().__init__(f"{reason}; retry in {retry_after_s} s")
        self.reason, self.retry_after_s = reason, retry_after_s


def describe_exit(pid: int | None, exitcode: int | None) -> str:
    """What happened, in the words an operator searches the logs and dashboards for."""
    who = "the ingest worker" if pid is None else f"the ingest worker (pid {pid})"
    if exitcode is None:
        return f"{who} died"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        if exitcode == -signal.SIGKILL:
            return f"{who} died (killed by SIGKILL; out of memory? the kernel's OOM killer sends it)"
        return f"{who} died (killed by {name})"
    return f"{who} died (exited with code {exitcode})"


class IngestPool:
    """One worker process for pulls, replaced when it dies. Use it from the event loop only:
    a replacement is spawned by the calling thread, and the worker's lifeline (the kernel's
    parent-death signal) is tied to that thread."""

    def __init__(self, *, on_death: Callable[[str], None] | None = None) -> None:
        self.on_death = on_death  # called with the reason, once per death
        self.restarts = 0  # deaths noticed and answered with a replacement
        self.last_death: str | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._procs: list[BaseProcess] = []
        self._starting: asyncio.Future[int] | None = None
        self._started_at = 0.0
        self._startup_s = STARTUP_S
        self._deaths_in_row = 0
        self._restart_at = 0.0  # time.monotonic(); no replacement before it
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs: which process to look at for its memory or CPU."""
        alive = [p.pid for p in self._procs if p.exitcode is None]
        return alive[0] if alive else None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=1,
            mp_context=mp.get_context("spawn"),
            initializer=ingest_worker.init,
            initargs=(os.getpid(),),
        )

    def _submit(self, pool: ProcessPoolExecutor, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        fut = asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        # the pool spawns its process inside submit; keep it, a broken pool forgets it
        self._procs = list((getattr(pool, "_processes", None) or {}).values())
        return fut

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args)` in the worker. WorkerDown when there is none or it dies meanwhile."""
        self.poll()
        down = self.unavailable()
        if down is not None:
            raise WorkerDown(*down)
        if self._pool is None:  # the first call: the worker starts with it
            self._pool = self._new_pool()
        pool = self._pool
        try:
            result = await self._submit(pool, fn, *args)
        except BrokenProcessPool:
            self._died(pool)
            down = self.unavailable() or (self.last_death or "the ingest worker died", 1)
            raise WorkerDown(*down) from None
        self._deaths_in_row = 0
        return result

    def warm(self) -> None:
        """Start the worker now rather than with the first call: a standby replica that takes a
        market over pulls at once, not after a process start and its imports."""
        if self._pool is None and self.last_death is None and not self._closed:
            self._restart()

    def poll(self) -> None:
        """Notice a dead worker and replace it; start a replacement whose back-off is over."""
        pool = self._pool
        if pool is not None:
            if getattr(pool, "_broken", False) or any(p.exitcode is not None for p in self._procs):
                self._died(pool)
        elif self.last_death is not None and not self._closed and time.monotonic() >= self._restart_at:
            self._restart()

    def unavailable(self) -> tuple[str, int] | None:
        """(why, seconds to wait) while no worker can take a call, else None."""
        if self._closed:
            return "ingestion is shutting down", 10
        if self.last_death is None:
            return None
        now = time.monotonic()
        if self._pool is None:  # backing off after deaths in a row
            wait = max(0.0, self._restart_at - now)
            return (
                f"{self.last_death}; {self._deaths_in_row} deaths in a row, so a new worker "
                f"starts in {math.ceil(wait)} s",
                max(1, math.ceil(wait + self._startup_s)),
            )
        if self._starting is not None:
            left = self._started_at + self._startup_s - now
            return f"{self.last_death}; a new worker is starting", max(1, math.ceil(left))
        return None

    def _restart(self) -> None:
        pool = self._pool = self._new_pool()
        self._started_at = time.monotonic()
        try:
            starting = self._starting = self._submit(pool, ingest_worker.ready)
        except OSError as e:  # no process could be made (out of memory, out of pids)
            self._died(pool, f"the ingest worker could not be started ({type(e).__name__}: {e})")
            return
        starting.add_done_callback(lambda f: self._started(pool, f))

    def _started(self, pool: ProcessPoolExecutor, f: asyncio.Future[int]) -> None:
        failed = f.cancelled() or f.exception() is not None  # read either way: no "never retrieved"
        if pool is not self._pool:
            return  # dropped meanwhile
        self._starting = None
        if failed:
            self._died(pool)  # it died starting
        else:
            self._startup_s = time.monotonic() - self._started_at
            log.info("ingest worker %s started in %.1f s", f.result(), self._startup_s)

    def _died(self, pool: ProcessPoolExecutor, reason: str | None = None) -> None:
        if pool is not self._pool:
            return  # already answered: a waiting call and poll() both saw this death
        reason = reason or self._exit_reason()
        self.restarts += 1
        self._deaths_in_row += 1
        self.last_death = reason
        self._restart_at = time.monotonic() + BACKOFF_S[min(self._deaths_in_row, len(BACKOFF_S)) - 1]
        self._pool, self._starting, self._procs = None, None, []
        # No cancel_futures: calls queued behind the dead one get BrokenProcessPool from the pool
        # (so their callers hear why), not a CancelledError that looks like a shutdown.
        pool.shutdown(wait=False)
        log.error("%s; starting a new one", reason)
        if self.on_death is not None:
            self.on_death(reason)
        if time.monotonic() >= self._restart_at:
            self._restart()

    def _exit_reason(self) -> str:
        for p in self._procs:
            if not wait_ready([p.sentinel], 0):
                continue  # still running: the pool broke some other way and is stopping it
            code = p.exitcode
            for _ in range(20):  # dead: the pool's own thread may be reaping it right now
                if code is not None:
                    break
                time.sleep(0.005)
                code = p.exitcode
            return describe_exit(p.pid, code)
        return describe_exit(None, None)

    async def close(self) -> None:
        """Stop the worker now, mid-pull or not (the next start resumes from the cursor)."""
        self._closed = True
        pool, procs = self._pool, self._procs
        self._pool, self._starting, self._procs = None, None, []
        if pool is None:
            return
        pool.shutdown(wait=False, cancel_futures=True)
        for proc in procs:
            proc.kill()  # it ignores SIGTERM (ingest_worker.init); a page commits whole, or not at all
        for proc in procs:
            await asyncio.to_thread(proc.join, 5)
