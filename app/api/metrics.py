"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

if TYPE_CHECKING:
    from app.market.storage import TickStorage
    from app.services.ingestion.scheduler import MarketStatus
    from app.services.jobs.manager import JobRecord

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# a tiny CNN trains in seconds, a GRU on months of trades in hours
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 7200)
JOB_ENDS = ("succeeded", "failed", "cancelled")  # the final statuses a job reaches while we run
MARKET = ("exchange", "symbol")
LIVE_FIGURES = {  # tickcast_live_<name>{model, exchange, symbol, window}
    "auc": "live AUC of the model's probabilities against the ticks that followed",
    "brier": "live Brier score",
    "log_loss": "live log loss",
    "ece": "live expected calibration error (10 bins)",
    "base_rate": "share of rises among the outcomes",
    "last_move_auc": "the last-move rule's AUC on the same outcomes",
    "outcomes": "outcomes in the window",
}
COUNT_REUSE = 100  # a market's tick count is reused for this many times as long as it took


class TickCounts:
    """Ticks stored per market, counted at most about 1 % of the time.

    COUNT(*) walks every row of the market under the store's lock: 0.14-0.2 s for 3M ticks
    of scripts/bench_store.py's kind, 0.4 s for 10M (page cache warm), at every scrape. A
    count is therefore reused for `reuse` times as long as it took: a small market is counted
    afresh at each scrape, a 10M-tick one about every 40 s, and the figure is never older.
    """

    def __init__(self, reuse: float = COUNT_REUSE) -> None:
        self.reuse = reuse
        self._known: dict[tuple[str, str], tuple[int, float]] = {}  # count, valid until (monotonic)

    def get(self, store: TickStorage, exchange: str, symbol: str) -> int:
        began = time.monotonic()
        known = self._known.get((exchange, symbol))
        if known is not None and began < known[1]:
            return known[0]
        n = store.count(exchange, symbol)
        ended = time.monotonic()
        self._known[(exchange, symbol)] = (n, ended + (ended - began) * self.reuse)
        return n


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        # process_* (memory, CPU, open files, start time), python_info, python_gc_*: of this
        # process only; training and ingest workers are separate processes
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.requests = Counter(
            "tickcast_http_requests_total", "HTTP requests", ("method", "route", "status"), registry=r
        )
        self.latency = Histogram(
            "tickcast_http_request_duration_seconds",
            "HTTP latency",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter("tickcast_predictions_total", "predictions served", registry=r)
        self.batch_size = Histogram(
            "tickcast_predict_batch_size", "windows per forward pass", buckets=BATCH_BUCKETS, registry=r
        )
        self.jobs = Gauge("tickcast_jobs", "training jobs by status", ("status",), registry=r)
        self.job_duration = Histogram(
            "tickcast_job_duration_seconds",
            "training jobs' run time, from their worker's start to their end, by final status",
            ("status",),
            buckets=JOB_BUCKETS,
            registry=r,
        )
        self.job_wait = Histogram(
            "tickcast_job_queue_wait_seconds",
            "time a job waited for a worker (observed when it ends)",
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        for status in JOB_ENDS:  # present at 0, so a rate of failed jobs has a series
            self.job_duration.labels(status)
        self.streams = Gauge("tickcast_stream_clients", "open /stream connections", registry=r)
        self.model = Info("tickcast_active_model", "the model /predict uses", registry=r)
        self.worker_restarts = Counter(
            "tickcast_worker_restarts",
            "worker processes that died and were "
            "replaced, by kind (ingest: the pull worker; job: a training job)",
            ("kind",),
            registry=r,
        )
        for kind in ("ingest", "job"):  # present at 0, so an alert on its rate has a series
            self.worker_restarts.labels(kind)
        self.store_up = Gauge(
            "tickcast_store_up",
            "1 when the last scrape could read the store, 0 when "
            "it could not (the store's figures then keep their last values)",
            registry=r,
        )
        self._market_gauges(r)  # and the live evaluation's (_live_gauges)
        self._seen: dict[tuple[Counter, tuple[str, ...]], int] = {}  # where delta-advanced counters are
        self._counts = TickCounts()
        self._refresh: list[Callable[[Metrics], None]] = []
        self._rendering = threading.Lock()  # scrapes run in threads: one refresh at a time

    def _market_gauges(self, r: CollectorRegistry) -> None:
        """Per configured market (TICKCAST_MARKETS): a fixed, small set of label values."""
        self.ticks_stored = Gauge(
            "tickcast_market_ticks_stored",
            "ticks in the store (a big market's count is up to about 40 s old, see TickCounts)",
            MARKET,
            registry=r,
        )
        self.last_tick = Gauge(
            "tickcast_market_last_tick_timestamp_seconds",
            "time of the newest stored tick (unix s); absent while none is stored",
            MARKET,
            registry=r,
        )
        self.lag = Gauge(
            "tickcast_market_lag_seconds",
            "now minus the newest stored tick's time (a quiet market lags too); absent while none is stored",
            MARKET,
            registry=r,
        )
        self.last_success = Gauge(
            "tickcast_market_last_successful_pull_timestamp_seconds",
            "when a pull of the market last worked (unix s); absent until one has",
            MARKET,
            registry=r,
        )
        self.pull_interval = Gauge(
            "tickcast_market_pull_interval_seconds",
            "seconds between scheduled "
            "pulls (TICKCAST_PULL_INTERVAL_S); absent when TICKCAST_INGEST is off, "
            "which silences alerts scaled by it",
            MARKET,
            registry=r,
        )
        self.pulls = Counter(
            "tickcast_market_pulls", "pulls, scheduled or manual, that worked or not", MARKET, registry=r
        )
        self.pull_errors = Counter(
            "tickcast_market_pull_errors",
            "pulls that failed (the reason is the market's last_error in /markets)",
            MARKET,
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "tickcast_market_consecutive_pull_failures",
            "failed pulls since the last one that worked",
            MARKET,
            registry=r,
        )
        self._live_gauges(r)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.predictions.inc(size)
        self.batch_size.observe(size)

    def _live_gauges(self, r: CollectorRegistry) -> None:
        labels = ("model", "exchange", "symbol", "window")
        self.live = {
            name: Gauge(f"tickcast_live_{name}", help_, labels, registry=r)
            for name, help_ in LIVE_FIGURES.items()
        }
        self.live_alert = Gauge(
            "tickcast_live_alert",
            "1 while a live condition holds on the newest 1,000 outcomes: auc_floor (AUC under "
            "TICKCAST_LIVE_AUC_FLOOR), below_last_move (AUC under the last-move rule's), ece_bound "
            "(ECE over TICKCAST_LIVE_ECE_MAX)",
            ("model", "exchange", "symbol", "alert"),
            registry=r,
        )
        self.live_predictions = Counter(
            "tickcast_live_predictions", "predictions logged by live evaluation, all models", registry=r
        )
        self.live_errors = Counter(
            "tickcast_live_errors", "live evaluation steps that failed (retried at the next poll)", registry=r
        )

    def observe_live(
        self, rows: Iterable[tuple[str, str, str, dict[str, Any]]], predictions: int, errors: int
    ) -> None:
        """The stored rolling figures of the models in the running (active and shadows): series of
        models that left it disappear rather than freeze at their last values."""
        for g in (*self.live.values(), self.live_alert):
            g.clear()
        for model, exchange, symbol, body in rows:
            for window, figures in body["windows"].items():
                for name, g in self.live.items():
                    v = figures.get("count" if name == "outcomes" else name)
                    if v is not None:
                        g.labels(model, exchange, symbol, window).set(v)
            for alert, on in body["alerts"].items():
                self.live_alert.labels(model, exchange, symbol, alert).set(1 if on else 0)
        self._advance(self.live_predictions, (), predictions)
        self._advance(self.live_errors, (), errors)

    def observe_job(self, record: JobRecord) -> None:
        """A job's end (JobManager's on_finish). A job cancelled before it started never ran:
        it has no run time nor a wait that ended."""
        if record.started_at is None or record.finished_at is None:
            return
        self.job_duration.labels(record.status).observe(max(0.0, record.finished_at - record.started_at))
        self.job_wait.observe(max(0.0, record.started_at - record.created_at))

    def count_worker_restarts(self, kind: str, total: int) -> None:
        """Bring the counter up to `total`, a count the supervisor keeps (read at scrape time, so
        the supervisors need not know about Prometheus)."""
        self._advance(self.worker_restarts, (kind,), total)

    def observe_markets(
        self, markets: Iterable[MarketStatus], store: TickStorage, interval_s: float | None
    ) -> None:
        """The ingestion figures of the configured markets, read at scrape time: the pull figures
        from the ingestor's memory, the tick figures from the store (two index descents and a
        count reused as TickCounts says). `interval_s` None: ingestion is off."""
        now = time.time()
        for st in markets:
            key = (st.exchange, st.symbol)
            self.ticks_stored.labels(*key).set(self._counts.get(store, *key))
            rng = store.time_range(*key)
            _set_or_clear(self.last_tick, key, rng[1] if rng else None)
            _set_or_clear(self.lag, key, now - rng[1] if rng else None)
            _set_or_clear(self.last_success, key, st.last_success)
            _set_or_clear(self.pull_interval, key, interval_s)
            self._advance(self.pulls, key, st.pulls + st.failures)
            self._advance(self.pull_errors, key, st.failures)
            self.consecutive_failures.labels(*key).set(st.consecutive_failures)

    def _advance(self, counter: Counter, labels: tuple[str, ...], total: int) -> None:
        """A counter kept elsewhere, brought up to its `total` by the difference since the last
        scrape (created at 0, so a rate has a series from the start)."""
        key = (counter, labels)
        seen = self._seen.get(key, 0)
        child = counter.labels(*labels) if labels else counter  # a counter without labels is its own child
        if total > seen:
            child.inc(total - seen)
            self._seen[key] = total

    def on_scrape(self, fn: Callable[[Metrics], None]) -> None:
        """Gauges that are cheaper to read at scrape time than to keep up to date."""
        self._refresh.append(fn)

    def render(self) -> bytes:
        """Blocks on the store: call it from a thread when on the event loop."""
        with self._rendering:
            for fn in self._refresh:
                fn(self)
            return generate_latest(self.registry)


def _set_or_clear(gauge: Gauge, labels: tuple[str, ...], value: float | None) -> None:
    """A figure that may not exist yet: no series rather than a made-up 0."""
    if value is not None:
        gauge.labels(*labels).set(value)
        return
    try:
        gauge.remove(*labels)
    except KeyError:  # never set
        pass
