"""Scheduled ingestion (and optional retraining) on APScheduler's AsyncIOScheduler.

One pull job per configured market, every `pull_interval_s`, with
max_instances=1 and coalescing: a slow exchange delays its own next pull and
never stacks pulls up. Pulls run in one worker process (see
`ingest_worker`), so /predict keeps answering at its idle latency while they run.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from app.market.sources import make_source
from app.market.sources.base import SourceError
from app.market.store import TickStore
from app.services import ingest_worker
from app.services.ingest import PullResult
from app.services.jobs import JobManager, JobSpec

log = logging.getLogger(__name__)


@dataclass
class MarketStatus:
    exchange: str
    symbol: str
    last_pull: float | None = None  # when the last pull finished (unix s)
    last_new_ticks: int = 0
    last_error: str | None = None
    pulls: int = 0


class UnknownMarket(LookupError):
    pass


class Ingestor:
    """Owns the sources of the configured markets, their status, and the schedule."""

    def __init__(self, store: TickStore, markets: list[str], *, source_urls: dict[str, str],
                 interval_s: float, enabled: bool, jobs: JobManager | None = None,
                 retrain_cron: str | None = None, synthetic_history_s: float = 3600.0) -> None:
        self.store = store
        self.synthetic_history_s = synthetic_history_s
        self.interval_s = interval_s
        self.enabled = enabled
        self.jobs = jobs
        self.retrain_cron = retrain_cron
        self._urls = source_urls
        self._pool: ProcessPoolExecutor | None = None
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.status: dict[tuple[str, str], MarketStatus] = {}
        for m in markets:
            exchange, symbol = m.split(":", 1)
            self.status[(exchange, symbol)] = MarketStatus(exchange, symbol)
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self.on_stored: Callable[[str, str], None] | None = None  # a pull stored new ticks

    def _source_kw(self, exchange: str) -> dict[str, Any]:
        make_source(exchange, self._urls.get(exchange))  # an unknown exchange fails here, loudly
        # the synthetic market's first pull is the history the first start trains on
        return {"history_s": self.synthetic_history_s} if exchange == "synthetic" else {}

    async def _pull(self, exchange: str, symbol: str, start: float | None) -> PullResult:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn"),
                                             initializer=ingest_worker.lower_priority)
        status, value = await asyncio.get_running_loop().run_in_executor(
            self._pool, ingest_worker.run_pull, str(self.store.path), exchange, symbol,
            self._urls.get(exchange), self._source_kw(exchange), start)
        if status != "ok":
            raise SourceError(value)
        return value

    async def fill_synthetic(self, symbol: str) -> PullResult:
        """The first start's data: the live synthetic market's history up to now, with its cursor,
        pulled by the same worker (and source) as later scheduled pulls, so they continue the
        same price path."""
        return await self._pull("synthetic", symbol, None)

    def market(self, exchange: str, symbol: str) -> MarketStatus:
        try:
            return self.status[(exchange, symbol)]
        except KeyError:
            raise UnknownMarket(f"{exchange}:{symbol} is not a configured market; add it to "
                                "TICKCAST_MARKETS") from None

    async def pull_now(self, exchange: str, symbol: str) -> PullResult:
        """One pull of a configured market (the schedule and POST .../pull both land here)."""
        st = self.market(exchange, symbol)
        lock = self._locks.setdefault((exchange, symbol), asyncio.Lock())
        async with lock:  # a manual pull and a scheduled one never interleave pages
            try:
                result = await self._pull(exchange, symbol, time.time() - 3600)
            except (SourceError, OSError, ValueError) as e:
                st.last_error, st.last_pull = str(e), time.time()
                log.warning("pull %s:%s failed: %s", exchange, symbol, e)
                raise
            st.last_pull, st.last_new_ticks, st.last_error = time.time(), result.new_ticks, None
            st.pulls += 1
            if result.new_ticks and self.on_stored is not None:
                self.on_stored(exchange, symbol)
            return result

    async def _scheduled_pull(self, exchange: str, symbol: str) -> None:
        try:
            await self.pull_now(exchange, symbol)
        except (SourceError, OSError, ValueError):
            pass  # recorded in the status; the next run retries from the same cursor

    def _retrain(self) -> None:
        if self.jobs is None:
            return
        for exchange, symbol in self.status:
            self.jobs.submit(JobSpec(exchange=exchange, symbol=symbol, start=None, end=None,
                                     config={"arch": "CNN"}, activate="if_better"))

    def start(self) -> None:
        if self.enabled:
            for exchange, symbol in self.status:
                self.scheduler.add_job(self._scheduled_pull, "interval", seconds=self.interval_s,
                                       args=(exchange, symbol), id=f"pull:{exchange}:{symbol}",
                                       max_instances=1, coalesce=True,
                                       misfire_grace_time=max(1, int(self.interval_s)),
                                       next_run_time=_now())
        if self.retrain_cron:
            self.scheduler.add_job(self._retrain, CronTrigger.from_crontab(self.retrain_cron, "UTC"),
                                   id="retrain", max_instances=1, coalesce=True)
        self.scheduler.start()

    async def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self._pool is not None:
            # A backfill may be mid-way: stop its process rather than wait. Each page commits
            # with its cursor in one SQLite transaction, so the next start resumes cleanly.
            procs = list(getattr(self._pool, "_processes", {}).values())
            self._pool.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()
            for proc in procs:
                await asyncio.to_thread(proc.join, 5)

    def describe(self) -> list[dict[str, Any]]:
        """Per market: last pull, last tick time, lag, ticks stored, last error, next run."""
        out = []
        now = time.time()
        for (exchange, symbol), st in self.status.items():
            rng = self.store.time_range(exchange, symbol)
            job = self.scheduler.get_job(f"pull:{exchange}:{symbol}") if self.scheduler.running else None
            nxt = job.next_run_time.timestamp() if job is not None and job.next_run_time else None
            out.append({**asdict(st), "ingesting": self.enabled,
                        "ticks_stored": self.store.count(exchange, symbol),
                        "last_tick_time": rng[1] if rng else None,
                        "lag_s": now - rng[1] if rng else None,
                        "cursor": self.store.cursor(exchange, symbol), "next_run": nxt})
        return out


def _now():  # noqa: ANN202 - datetime for APScheduler's first run
    from datetime import UTC, datetime

    return datetime.now(UTC)
