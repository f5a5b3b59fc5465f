"""Scheduled ingestion (and optional retraining) on APScheduler's AsyncIOScheduler.

One pull job per configured market, every `pull_interval_s`, with
max_instances=1 and coalescing: a slow exchange delays its own next pull and
never stacks pulls up. Pulls run in one worker process (see
`ingestion.worker`), so /predict keeps answering at its idle latency while they run.
That process is supervised (see `ingestion.pool`): a watch job notices its death
within a second even when no pull runs, every market's status says so, and a
new worker takes over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from app.market.markets import Market
from app.market.sources import SOURCES
from app.market.sources.base import SourceError
from app.market.storage import TickStorage
from app.services.ingestion import worker as ingest_worker
from app.services.ingestion.pool import IngestPool
from app.services.ingestion.pull import PullResult
from app.services.jobs.manager import JobManager, JobSpec, QueueFull
from app.services.jobs.manager import StoreUnavailable as JobStoreUnavailable
from app.services.jobs.states import Activation
from app.settings import env_name

log = logging.getLogger(__name__)

WATCH_S = 0.5  # how often the worker is checked (a waitpid: cheap), or twice a pull interval if shorter


@dataclass
class MarketStatus:
    exchange: str
    symbol: str
    last_pull: float | None = None  # when the last pull finished (unix s)
    last_success: float | None = None  # when the last pull that worked finished (unix s)
    last_new_ticks: int = 0
    last_error: str | None = None
    pulls: int = 0
    failures: int = 0  # failed pulls, ever
    consecutive_failures: int = 0  # since the last pull that worked: alert on this


class UnknownMarket(LookupError):
    """Not one of the configured markets, so it is not pulled; configuring it makes it one."""

    def __init__(self, exchange: str, symbol: str) -> None:
        super().__init__(f"{exchange}:{symbol} is not a configured market")
        self.exchange, self.symbol = exchange, symbol


class IngestFailed(RuntimeError):
    """A pull failed in the worker for a reason that is not the exchange's. Pages stored
    before it are kept with their cursor, so the next pull resumes there."""


class StoreUnavailable(IngestFailed):
    """The worker could not write the tick store (locked, read-only, disk full)."""


class Ingestor:
    """Owns the sources of the configured markets, their status, and the schedule."""

    def __init__(
        self,
        store: TickStorage,
        markets: list[Market],
        *,
        source_urls: dict[str, str],
        interval_s: float,
        enabled: bool,
        jobs: JobManager | None = None,
        retrain_cron: str | None = None,
        synthetic_history_s: float = 3600.0,
        on_stored: Callable[[str, str], None] | None = None,
    ) -> None:
        self.store = store
        self.synthetic_history_s = synthetic_history_s
        self.interval_s = interval_s
        self.enabled = enabled
        self.jobs = jobs
        self.retrain_cron = retrain_cron
        self._urls = source_urls
        self.worker = IngestPool(on_death=self._worker_died)
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.status: dict[tuple[str, str], MarketStatus] = {}
        for m in markets:
            self.status[(m.exchange, m.symbol)] = MarketStatus(m.exchange, m.symbol)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._stopping = False
        self.on_stored = on_stored  # a pull stored new ticks
        # per market, at its last pull that stored ticks: that pull's end minus the newest tick's time
        self._lags: dict[tuple[str, str], float] = {}

    def _source_kw(self, exchange: str) -> dict[str, Any]:
        if exchange not in SOURCES:  # fails here, loudly (building a source per pull costs an SSL context)
            raise IngestFailed(  # also each pull's status: the setting is named here
                f"{env_name('markets')} names {exchange!r}, which has no source (known: "
                f"{', '.join(sorted(SOURCES))}); fix the setting and restart"
            )
        # the synthetic market's first pull is the history the first start trains on
        return {"history_s": self.synthetic_history_s} if exchange == "synthetic" else {}

    @property
    def worker_restarts(self) -> int:
        """Deaths of the ingest worker noticed and answered with a new one (for Prometheus)."""
        return self.worker.restarts

    def _worker_died(self, reason: str) -> None:
        # every market, pulling or not: none is pulled until the new worker is up
        for st in self.status.values():
            st.last_error = (
                f"{reason}; a new worker is starting, the next pull resumes from the stored cursor"
            )

    async def _pull(self, exchange: str, symbol: str, start: float | None) -> PullResult:
        kind, value = await self.worker.run(
            ingest_worker.run_pull,
            str(self.store.path),
            exchange,
            symbol,
            self._urls.get(exchange),
            self._source_kw(exchange),
            start,
        )
        if isinstance(value, PullResult):  # kind "ok"; otherwise `value` is the message
            return value
        if kind == "source":
            raise SourceError(value)
        if kind == "store":
            raise StoreUnavailable(f"the tick store {self.store.path} could not be written ({value})")
        raise IngestFailed(
            f"the pull failed in the ingest worker ({value}); the traceback is in the server log"
        )

    async def fill_synthetic(self, symbol: str) -> PullResult:
        """The first start's data: the live synthetic market's history up to now, with its cursor,
        pulled by the same worker (and source) as later scheduled pulls, so they continue the
        same price path."""
        return await self._pull("synthetic", symbol, None)

    def market(self, exchange: str, symbol: str) -> MarketStatus:
        try:
            return self.status[(exchange, symbol)]
        except KeyError:
            raise UnknownMarket(exchange, symbol) from None

    def statuses(self) -> list[MarketStatus]:
        """The configured markets' pull figures as they are now (copies), in their order."""
        return [dataclasses.replace(st) for st in self.status.values()]

    async def pull_now(self, exchange: str, symbol: str) -> PullResult:
        """One pull of a configured market (the schedule and POST .../pull both land here)."""
        st = self.market(exchange, symbol)
        lock = self._locks.setdefault((exchange, symbol), asyncio.Lock())
        async with lock:  # a manual pull and a scheduled one never interleave pages
            try:
                result = await self._pull(exchange, symbol, time.time() - 3600)
            except Exception as e:  # every failure shows in the status, then goes to the caller
                st.last_error, st.last_pull = str(e), time.time()
                st.failures += 1
                st.consecutive_failures += 1
                log.warning("pull %s:%s failed: %s", exchange, symbol, e)
                raise
            done = time.time()
            st.last_pull, st.last_new_ticks, st.last_error = done, result.new_ticks, None
            st.last_success = done
            st.pulls += 1
            st.consecutive_failures = 0
            if result.new_ticks:
                self._note_lag(exchange, symbol, done)
                if self.on_stored is not None:
                    self.on_stored(exchange, symbol)
            return result

    def _note_lag(self, exchange: str, symbol: str, stored_at: float) -> None:
        """Remember how long the newest tick took to reach the store: the pull that stored it
        ended at `stored_at` (one indexed read, in the loop like the status). A store that cannot
        answer now leaves the last figure: the pull itself worked."""
        try:
            newest = self.store.latest(exchange, symbol, 1, ids=False)
        except self.store.errors as e:
            log.warning(
                "ingestion lag of %s:%s not updated: the store could not be read: %s", exchange, symbol, e
            )
            return
        if len(newest):
            self._lags[(exchange, symbol)] = stored_at - float(newest.time[-1])

    def ingestion_lag(self, exchange: str, symbol: str) -> float | None:
        """Seconds the market's newest pulled tick took to be stored: from its trade time to the
        end of the pull that stored it. None for a market no pull of this process stored ticks of
        (not ingested here: imported, or pulled by another process)."""
        return self._lags.get((exchange, symbol))

    async def _scheduled_pull(self, exchange: str, symbol: str) -> None:
        try:
            await self.pull_now(exchange, symbol)
        except asyncio.CancelledError:
            # stop() ended the schedule and the worker mid-pull (Ctrl-C, SIGTERM, a failed start):
            # the pages are committed with their cursor, so the next start resumes there; nothing
            # to report. A cancellation while not stopping is someone else's and goes on.
            if not self._stopping:
                raise
        except Exception:
            # Not retried at once, not even after a worker death: the pull may be what killed it.
            pass

    async def _watch(self) -> None:
        """A coroutine, so it runs on the event loop: a replacement worker is spawned from the
        loop's thread, which its lifeline is tied to."""
        self.worker.poll()

    def _retrain(self) -> None:
        """One if_better job per market. A market that cannot be queued (a full queue, a store
        that cannot record the job) is logged and skipped: the others are still queued."""
        if self.jobs is None:
            return
        for exchange, symbol in self.status:
            try:
                self.jobs.submit(
                    JobSpec(
                        exchange=exchange,
                        symbol=symbol,
                        start=None,
                        end=None,
                        config={"arch": "CNN"},
                        activate=Activation.IF_BETTER,
                    )
                )
            except QueueFull as e:
                log.warning(
                    "scheduled retraining of %s:%s was skipped: %s. Raise %s or wait: the next %s "
                    "run queues it again, or POST /train once the queue has room",
                    exchange,
                    symbol,
                    e,
                    env_name("job_queue_max"),
                    env_name("retrain_cron"),
                )
            except JobStoreUnavailable as e:
                log.warning(
                    "scheduled retraining of %s:%s was skipped: %s. The next %s run queues it "
                    "again, or POST /train once the store accepts writes",
                    exchange,
                    symbol,
                    e,
                    env_name("retrain_cron"),
                )
            except ValueError as e:  # too few ticks so far: the next run finds more
                log.warning(
                    "scheduled retraining of %s:%s was skipped: %s. The next %s run tries again",
                    exchange,
                    symbol,
                    e,
                    env_name("retrain_cron"),
                )

    def start(self) -> None:
        if self.enabled:
            for exchange, symbol in self.status:
                self.scheduler.add_job(
                    self._scheduled_pull,
                    "interval",
                    seconds=self.interval_s,
                    args=(exchange, symbol),
                    id=f"pull:{exchange}:{symbol}",
                    max_instances=1,
                    coalesce=True,
                    misfire_grace_time=max(1, int(self.interval_s)),
                    next_run_time=_now(),
                )
        # a death is noticed even when no pull runs (ingestion off, manual pulls only)
        self.scheduler.add_job(
            self._watch,
            "interval",
            seconds=min(self.interval_s / 2, WATCH_S),
            id="watch:ingest-worker",
            max_instances=1,
            coalesce=True,
        )
        if self.retrain_cron:
            self.scheduler.add_job(
                self._retrain,
                CronTrigger.from_crontab(self.retrain_cron, "UTC"),
                id="retrain",
                max_instances=1,
                coalesce=True,
            )
        self.scheduler.start()

    async def stop(self) -> None:
        self._stopping = True
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # A backfill may be mid-way: stop its process rather than wait. Each page commits
        # with its cursor in one SQLite transaction, so the next start resumes cleanly.
        await self.worker.close()

    def describe(self) -> list[dict[str, Any]]:
        """Per configured market: last pull, last tick time, lag, ticks stored, last error, next
        run. Then every other market the store holds (imported, or configured once), so that
        no stored data is invisible: `scheduled` False, its ticks, and null pull fields."""
        out = []
        now = time.time()
        unscheduled = {
            "last_pull": None,
            "last_success": None,
            "last_new_ticks": None,
            "last_error": None,
            "pulls": None,
            "failures": None,
            "consecutive_failures": None,
        }
        others = [m for m in self.store.markets() if m not in self.status]
        for exchange, symbol in [*self.status, *others]:
            st = self.status.get((exchange, symbol))
            rng = self.store.time_range(exchange, symbol)
            job = (
                self.scheduler.get_job(f"pull:{exchange}:{symbol}")
                if st is not None and self.scheduler.running
                else None
            )
            nxt = job.next_run_time.timestamp() if job is not None and job.next_run_time else None
            pulls = asdict(st) if st is not None else {"exchange": exchange, "symbol": symbol, **unscheduled}
            out.append(
                {
                    **pulls,
                    "scheduled": st is not None,
                    "ingesting": self.enabled and st is not None,
                    "worker_restarts": self.worker.restarts,
                    "ticks_stored": self.store.count(exchange, symbol),
                    "last_tick_time": rng[1] if rng else None,
                    "lag_s": now - rng[1] if rng else None,
                    "cursor": self.store.cursor(exchange, symbol),
                    "next_run": nxt,
                }
            )
        return out


def _now() -> datetime:
    return datetime.now(UTC)
