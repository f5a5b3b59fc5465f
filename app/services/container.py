"""The service's long-lived parts, built from the settings, started and stopped in order.

`Services.build` makes every part with its hooks as constructor arguments (nothing is
wired afterwards by setting attributes); `start` and `stop` hold the order the parts
depend on, and the lifespan in `app.main` is only build, start, yield, stop. A test
builds as many independent `Services` as it likes: nothing here is global.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from app.database import is_postgres
from app.market.backends import open_tick_store
from app.market.storage import TickStorage
from app.ml.checkpoint import best_device
from app.services import bootstrap, housekeeping
from app.services.feeds import Feeds
from app.services.ingestion.replicas import for_target
from app.services.ingestion.scheduler import Ingestor
from app.services.jobs.manager import JobManager, JobRecord
from app.services.jobs.ray_backend import ray_spawner  # imports Ray only when called
from app.services.jobs.states import Activation, JobStatus
from app.services.live.backends import open_prediction_log
from app.services.live.log import PredictionLog
from app.services.live.service import LiveEval, kept_calibrators, live_config
from app.services.markets import Markets
from app.services.model_store import adopt_folder, open_registry
from app.services.no_model import NoModel, Remedy
from app.services.predictor import Predictor
from app.services.registry import Registry
from app.settings import Settings

log = logging.getLogger("tickcast")

DEFAULT_SYMBOL = "BTC-USD"  # the synthetic market a first start fills when none is configured
FOLLOW_GRACE_S = 2.0  # at most this long at shutdown for the first model's last progress line


@dataclass(frozen=True)
class Readiness:
    """/ready's answer: the active model's id, or why there is none (in domain words), what
    brings one back (`remedy`, None: the store is the trouble) and when to ask again."""

    model_id: str | None
    reason: str = ""
    retry_after_s: int | None = None
    remedy: Remedy | None = None


@dataclass
class Services:
    settings: Settings
    store: TickStorage
    registry: Registry
    predictor: Predictor
    jobs: JobManager
    feeds: Feeds
    ingestor: Ingestor
    markets: Markets
    live: LiveEval
    _following: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        on_batch: Callable[[int], None] | None = None,
        on_job_finish: Callable[[JobRecord], None] | None = None,
    ) -> Services:
        """Every part, none started. `on_batch` hears each forward pass's size, `on_job_finish`
        each job's final record (after a successful job's model was activated, if it asked)."""
        # before the store and the models are opened: the temporary files a killed process left
        db = settings.database()  # a SQLite file or a postgresql:// URL every part opens
        housekeeping.at_start(settings.models_dir, ":memory:" if is_postgres(db) else db)
        store = open_tick_store(db)
        registry = open_registry(settings.models_dir, db)
        adopt_folder(registry)  # a first start on PostgreSQL keeps the folder's models
        live_log = open_prediction_log(db)
        predictor = _predictor(settings, registry, live_log, on_batch)
        live = LiveEval(store, live_log, predictor, registry, live_config(settings))
        jobs = JobManager(
            store,
            registry,
            concurrency=settings.job_concurrency,
            threads=settings.job_threads,
            queue_max=settings.job_queue_max,
            on_finish=_on_job_finish(predictor, live, on_job_finish),
            gap_s=settings.gap_s,
            spawner=ray_spawner(settings.ray_address) if settings.job_backend == "ray" else None,
        )
        feeds = Feeds(
            store,
            predictor,
            poll_s=settings.stream_poll_s,
            max_clients=settings.stream_max_clients,
            # the ingestor is built next (it tells the feeds of each pull); asked only once running
            ingestion_lag=lambda exchange, symbol: ingestor.ingestion_lag(exchange, symbol),
        )
        # PostgreSQL: one ingesting replica per market, and every replica hears of stored ticks
        replicas = for_target(db, settings, _both(feeds.notify, live.notify), (feeds.notify_all, live.notify))
        ingestor = Ingestor(
            store,
            settings.markets,
            source_urls=settings.source_urls,
            interval_s=settings.pull_interval_s,
            enabled=settings.ingest,
            jobs=jobs,
            retrain_cron=settings.retrain_cron,
            synthetic_history_s=settings.bootstrap_ticks * bootstrap.SYNTHETIC_SECONDS_PER_TICK,
            on_stored=replicas.on_stored,
            replicas=replicas,
        )
        markets = Markets(
            store,
            predictor,
            settings.markets,
            staleness_limit=settings.staleness_limit,
            ingestion_lag=ingestor.ingestion_lag,
            stale_retry_s=settings.pull_interval_s,
            on_stored=replicas.on_stored,
        )
        return cls(settings, store, registry, predictor, jobs, feeds, ingestor, markets, live)

    async def start(self) -> None:
        """Load the active model, start the batcher and the jobs, then (first start only) fill the
        synthetic market and queue a first model; the schedule starts last, so its first pull
        continues from the history the bootstrap stored."""
        self.predictor.load_active()
        self.registry.watch(self.predictor.follow, self.predictor.forget)  # other replicas' choices
        await self.predictor.start()
        await self.jobs.start()
        # Everything loaded so far lives as long as the process: keep the collector off it, and
        # collect young objects less often (a request's parsed ticks die young anyway).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        await self._bootstrap()
        await self.live.start()
        self.ingestor.start()

    async def stop(self) -> None:
        """Streams end first (their clients see the end and may reconnect elsewhere), then
        ingestion, the jobs (a running one is recorded as interrupted; then the job store's own
        connection closes), the batcher (it finishes what is queued), and the store last."""
        if self._following is not None:
            if self.predictor.model is not None and not self._following.done():
                # The first model is active but its job's record may land a moment later (the
                # manager activates before it records): let the follower log that line, briefly.
                await asyncio.wait({self._following}, timeout=FOLLOW_GRACE_S)
            self._following.cancel()
        self.feeds.close()
        await self.ingestor.stop()
        await self.live.stop()
        await self.jobs.stop()
        self.jobs.close()
        await self.predictor.stop()
        await asyncio.to_thread(self.registry.close)  # stops watching (a listener thread's poll)
        self.live.log.close()
        self.store.close()

    async def _bootstrap(self) -> None:
        """A first start (no model anywhere): store the synthetic market's history, train a
        first model on it, and follow that job in the log and in /ready's reason."""
        s = self.settings
        if not (s.bootstrap and self.predictor.model is None and bootstrap.needed(self.registry)):
            return
        synthetic = [m.symbol for m in s.markets if m.exchange == "synthetic"]
        symbol = synthetic[0] if synthetic else DEFAULT_SYMBOL
        if self.store.count("synthetic", symbol) == 0:
            await bootstrap.fill(self.ingestor, symbol, s.bootstrap_ticks)
        leases = self.ingestor.leases
        if leases is not None and not leases.holds("synthetic", symbol):
            # replicas on one database: the market's leader trains the first model, and its
            # activation reaches this replica through the registry's notifications
            log.info("bootstrap: the replica leading synthetic:%s trains the first model", symbol)
            return
        job = bootstrap.queue_first_job(self.jobs, symbol)
        if job is not None:  # logs its progress; keeps the 503's reason current
            self._following = bootstrap.follow(self.jobs, job, self.predictor)

    def readiness(self) -> Readiness:
        """Ready when the store answers and a model is loaded; else why not (blocks on the store
        for a moment)."""
        try:
            self.store.schema_version  # noqa: B018 - touches the connection
        except Exception as e:
            return Readiness(None, f"tick store unavailable: {e}")
        model = self.predictor.model
        if model is None:
            why = self.predictor.no_model_reason()
            return Readiness(None, why.text, NoModel.retry_after_s, why.remedy)
        return Readiness(model.id)


def _on_job_finish(
    predictor: Predictor, live: LiveEval, then: Callable[[JobRecord], None] | None
) -> Callable[[JobRecord], None]:
    """JobManager's on_finish: a job that succeeded and asked to be activated is swapped in (this
    runs in a thread: loading a model blocks); one that asked for if_better_live joins the live
    shadows; then `then` hears of every ending."""

    def on_finish(record: JobRecord) -> None:
        if then is not None:
            then(record)
        result = record.result or {}
        if record.status != JobStatus.SUCCEEDED:
            return
        if result.get("activated"):
            predictor.activate(result["model_id"])
            log.info("job %s: activated %s (%s)", record.id, result["model_id"], result.get("reason", ""))
        elif record.spec.get("activate") == Activation.IF_BETTER_LIVE:
            live.pin(result["model_id"])
            log.info(
                "job %s: %s scores in shadow until live evidence promotes it", record.id, result["model_id"]
            )

    return on_finish


def _predictor(
    settings: Settings, registry: Registry, live_log: PredictionLog, on_batch: Callable[[int], None] | None
) -> Predictor:
    """The predictor on the best device; a model it activates serves with its newest kept live calibrator."""
    return Predictor(
        registry,
        str(best_device(settings.device)),
        window_ms=settings.batch_window_ms,
        max_batch=settings.batch_max,
        threads=settings.predict_threads,
        on_batch=on_batch,
        kept_calibrator=kept_calibrators(live_log),
    )


def _both(first: Callable[[str, str], None], then: Callable[[str, str], None]) -> Callable[[str, str], None]:
    """One on_stored hook that tells the streams and live evaluation."""

    def hook(exchange: str, symbol: str) -> None:
        first(exchange, symbol)
        then(exchange, symbol)

    return hook
