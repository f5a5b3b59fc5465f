"""Prometheus metrics, one registry per app so several apps (tests) never collide."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("tickcast_http_requests_total", "HTTP requests",
                                ("method", "route", "status"), registry=r)
        self.latency = Histogram("tickcast_http_request_duration_seconds", "HTTP latency",
                                 ("method", "route"), buckets=LATENCY_BUCKETS, registry=r)
        self.predictions = Counter("tickcast_predictions_total", "predictions served", registry=r)
        self.batch_size = Histogram("tickcast_predict_batch_size", "windows per forward pass",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.jobs = Gauge("tickcast_jobs", "training jobs by status", ("status",), registry=r)
        self.streams = Gauge("tickcast_stream_clients", "open /stream connections", registry=r)
        self.model = Info("tickcast_active_model", "the model /predict uses", registry=r)
        self.worker_restarts = Counter("tickcast_worker_restarts", "worker processes that died and were "
                                       "replaced, by kind (ingest: the pull worker; job: a training job)",
                                       ("kind",), registry=r)
        self._restarts_seen: dict[str, int] = {}
        for kind in ("ingest", "job"):  # present at 0, so an alert on its rate has a series
            self.worker_restarts.labels(kind)
        self._refresh: list[Callable[[Metrics], None]] = []

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_batch(self, size: int) -> None:
        self.predictions.inc(size)
        self.batch_size.observe(size)

    def count_worker_restarts(self, kind: str, total: int) -> None:
        """Bring the counter up to `total`, a count the supervisor keeps (read at scrape time, so
        the supervisors need not know about Prometheus)."""
        seen = self._restarts_seen.get(kind, 0)
        if total > seen:
            self.worker_restarts.labels(kind).inc(total - seen)
            self._restarts_seen[kind] = total

    def on_scrape(self, fn: Callable[[Metrics], None]) -> None:
        """Gauges that are cheaper to read at scrape time than to keep up to date."""
        self._refresh.append(fn)

    def render(self) -> bytes:
        for fn in self._refresh:
            fn(self)
        return generate_latest(self.registry)
