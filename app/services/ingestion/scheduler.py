"""Scheduled ingestion (and optional retraining) on APScheduler's AsyncIOScheduler.

One pull job per configured market, every `pull_interval_s`, with
max_instances=1 and coalescing: a slow exchange delays its own next pull and
never stacks pulls up. Pulls run in one worker process (see
`ingestion.worker`), so /predict keeps answering at its idle latency while they run.
That process is supervised (see `ingestion.pool`): a watch job notices its death
within a second even when no pull runs, every market's status says so, and a
new worker takes over. With replicas sharing a PostgreSQL database (`leases`), a
lock round before the pulls decides which markets this replica pulls (see
`ingestion.leader`); the others are pulled by another replica and skipped here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from app.database import redact
from app.market.markets import Market
from app.market.sources import SOURCES
from app.market.sources.base import SourceError
from app.market.storage import TickStorage
from app.services.ingestion import retrain
from app.services.ingestion import worker as ingest_worker
from app.services.ingestion.pool import IngestPool
from app.services.ingestion.pull import PullResult
from app.services.ingestion.replicas import Replicas
from app.services.jobs.manager import JobManager
from app.settings import env_name

log = logging.getLogger(__name__)

WATCH_S = 0.5  # how often the worker is checked (a waitpid: cheap), or twice a pull interval if shorter
# Lock rounds run twice a pull interval, or every LEAD_S if that is sooner: a dead leader's markets
# are taken over (and pulled at once) well within two intervals
LEAD_S = 1.0
FILL_WAIT_S = 120.0  # how long a replica waits for another one's first fill of the synthetic market


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
        replicas: Replicas | None = None,
    ) -> None:
        """`replicas`: when replicas share the store (PostgreSQL), the markets' locks (which decide
        what this one pulls) and the broadcast of stored ticks (started and stopped here)."""
        self.store = store
        self.leases = replicas.leases if replicas is not None else None
        self.broadcast = replicas.broadcast if replicas is not None else None
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
        self._preparing: asyncio.Task[None] | None = None
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
        # every market this replica pulls: none is pulled until the new worker is up
        for st in self.status.values():
            if self.leases is not None and not self.leases.holds(st.exchange, st.symbol):
                continue  # another replica pulls it: its status here must not say it fails
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
            raise StoreUnavailable(f"the tick store {redact(self.store.path)} could not be written ({value})")
        raise IngestFailed(
            f"the pull failed in the ingest worker ({value}); the traceback is in the server log"
        )

    async def fill_synthetic(self, symbol: str) -> PullResult:
        """The first start's data: the live synthetic market's history up to now, with its cursor,
        pulled by the same worker (and source) as later scheduled pulls, so they continue the
        same price path. With replicas, only the one holding the market's lock fills it (two
        would store two different paths); the others wait until its ticks are stored."""
        leases = self.leases
        deadline = time.monotonic() + FILL_WAIT_S
        while leases is not None and time.monotonic() < deadline:
            await asyncio.to_thread(leases.refresh)
            if leases.holds("synthetic", symbol):
                break
            if await asyncio.to_thread(self.store.count, "synthetic", symbol):
                return PullResult("synthetic", symbol, 0, 0, self.store.cursor("synthetic", symbol), 0.0)
            await asyncio.sleep(min(self.interval_s, 1.0))
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
        """One pull of a configured market (the schedule and POST .../pull both land here). A
        manual pull runs even where another replica leads the market: the store keeps each trade
        once, and the leader's next pull resumes from the cursor this one left."""
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

    def leads(self, exchange: str, symbol: str) -> bool:
        """Whether this process pulls the market on the schedule now: a configured market with
        ingestion on, and with replicas, one whose lock this replica holds."""
        if not self.enabled or (exchange, symbol) not in self.status:
            return False
        return self.leases is None or self.leases.holds(exchange, symbol)

    async def _lead(self) -> None:
        """One lock round (off the loop: it waits on the database). A market taken over is pulled
        at once, so a dead leader's market is pulled again within one interval and a pull; a
        market let go keeps no failure figures here, where it is no longer pulled."""
        if self.leases is None:
            return
        changed = await asyncio.to_thread(self.leases.refresh)
        for key in changed.lost:
            st = self.status[key]
            st.last_error, st.consecutive_failures = None, 0
        for exchange, symbol in changed.gained:
            job = self.scheduler.get_job(f"pull:{exchange}:{symbol}")
            if job is not None:
                job.modify(next_run_time=_now())

    async def _prepare(self) -> None:
        """The worker opens the store and the sources now, not at the first pull of a market taken
        over (a connection, an HTTP client: a few hundred ms of a takeover otherwise)."""
        exchanges = {e: (self._urls.get(e), self._source_kw(e)) for e, _ in self.status if e in SOURCES}
        with contextlib.suppress(Exception):  # the first pull opens them, or says why it cannot
            await self.worker.run(ingest_worker.prepare, str(self.store.path), exchanges)

    async def _scheduled_pull(self, exchange: str, symbol: str) -> None:
        if not self.leads(exchange, symbol):
            return  # another replica holds its lock (or none could be taken yet)
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
        """One if_better job per market (what the cron trigger runs; see `retrain.queue_all`)."""
        if self.jobs is not None:
            retrain.queue_all(self.jobs, list(self.status))

    def start(self) -> None:
        if self.broadcast is not None:  # listening whether this replica ingests or not
            self.broadcast.start()
        if self.enabled and self.leases is not None:
            self.worker.warm()  # a standby that takes a market over pulls it at once
            self._preparing = asyncio.get_running_loop().create_task(self._prepare())
            self.scheduler.add_job(
                self._lead,
                "interval",
                seconds=min(self.interval_s / 2, LEAD_S),
                id="lead:markets",
                max_instances=1,
                coalesce=True,
                next_run_time=_now(),
            )
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
        if self._preparing is not None:
            self._preparing.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        # A backfill may be mid-way: stop its process rather than wait. Each page commits
        # with its cursor in one SQLite transaction, so the next start resumes cleanly.
        await self.worker.close()
        if self.leases is not None:  # only once the worker is gone: no pull overlaps the next leader's
            await asyncio.to_thread(self.leases.close)
        if self.broadcast is not None:
            await self.broadcast.stop()

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
                    # pulled here; a scheduled market that is not is another replica's to pull
                    "ingesting": self.leads(exchange, symbol),
                    "leader": self.leads(exchange, symbol) if st is not None else None,
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
