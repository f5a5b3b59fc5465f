"""The FastAPI app: `create_app(settings)` wires store, registry, predictor and jobs.

The lifespan owns every long-lived part, so tests build as many independent
apps as they like and a shutdown finishes requests in flight, then stops
jobs (recorded as interrupted) before the store closes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import errors
from app.api.metrics import Metrics
from app.api.middleware import BodyLimit, RequestMetrics, SealedWrites, document
from app.api.routes import dashboard, docs, health, jobs, markets, models, predict, stream
from app.market.store import StoreError, TickStore
from app.ml.checkpoint import best_device
from app.services import bootstrap, housekeeping
from app.services.feeds import Feeds
from app.services.ingestion.scheduler import Ingestor
from app.services.jobs.manager import JobManager, JobRecord
from app.services.jobs.manager import StoreUnavailable as JobStoreUnavailable
from app.services.predictor import Predictor
from app.services.registry import Registry
from app.settings import Settings, get_settings

log = logging.getLogger("tickcast")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        logging.basicConfig(
            level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        if settings.log_level != "debug":  # two lines per market per pull otherwise
            logging.getLogger("apscheduler").setLevel(logging.WARNING)
        housekeeping.at_start(settings.models_dir, settings.store_path)
        store = TickStore(settings.store_path)
        registry = Registry(settings.models_dir)
        predictor = Predictor(
            registry,
            str(best_device(settings.device)),
            window_ms=settings.batch_window_ms,
            max_batch=settings.batch_max,
            threads=settings.predict_threads,
        )
        predictor.on_batch = metrics.observe_batch
        predictor.load_active()

        def on_finish(record: JobRecord) -> None:
            metrics.observe_job(record)
            result = record.result or {}
            if record.status == "succeeded" and result.get("activated"):
                predictor.activate(result["model_id"])
                log.info("job %s: activated %s (%s)", record.id, result["model_id"], result.get("reason", ""))

        manager = JobManager(
            store,
            registry,
            concurrency=settings.job_concurrency,
            threads=settings.job_threads,
            queue_max=settings.job_queue_max,
            on_finish=on_finish,
        )
        app.state.settings, app.state.store, app.state.registry = settings, store, registry
        app.state.predictor, app.state.jobs, app.state.metrics = predictor, manager, metrics
        metrics.on_scrape(lambda m: _refresh_gauges(m, app))
        await predictor.start()
        await manager.start()
        # Everything loaded so far lives as long as the process: keep the collector off it, and
        # collect young objects less often (a request's parsed ticks die young anyway).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        ingestor = Ingestor(
            store,
            settings.markets,
            source_urls=settings.source_urls,
            interval_s=settings.pull_interval_s,
            enabled=settings.ingest,
            jobs=manager,
            retrain_cron=settings.retrain_cron,
            synthetic_history_s=settings.bootstrap_ticks * bootstrap.SYNTHETIC_SECONDS_PER_TICK,
        )
        app.state.ingestor = ingestor
        feeds = Feeds(
            store, predictor, poll_s=settings.stream_poll_s, max_clients=settings.stream_max_clients
        )
        app.state.feeds = feeds
        ingestor.on_stored = feeds.notify
        following: asyncio.Task[None] | None = None
        if settings.bootstrap and predictor.model is None and bootstrap.needed(registry):
            synthetic = [m.symbol for m in settings.markets if m.exchange == "synthetic"]
            symbol = synthetic[0] if synthetic else "BTC-USD"
            if store.count("synthetic", symbol) == 0:
                await bootstrap.fill(ingestor, symbol, settings.bootstrap_ticks)
            job = bootstrap.queue_first_job(manager, symbol)
            if job is not None:  # logs its progress; keeps the 503's reason current
                following = bootstrap.follow(manager, job, predictor)
        ingestor.start()
        restore_signals = _end_streams_on_exit_signal(feeds)
        try:
            yield
        finally:
            restore_signals()
            if following is not None:
                following.cancel()
            feeds.close()
            await ingestor.stop()
            await manager.stop()
            await predictor.stop()
            store.close()

    app = FastAPI(
        title="tickcast",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,  # served from vendored files: app/api/routes/docs.py
        description="Probability that a market's price rises on the next trade tick.",
    )
    errors.install(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    for r in (
        predict.router,
        jobs.router,
        models.router,
        markets.router,
        stream.router,
        health.router,
        dashboard.router,
        docs.router,
    ):
        app.include_router(r)
    app.mount("/static", dashboard.Static(directory=dashboard.STATIC), name="static")
    # innermost: its 403/415 pass through CORSMiddleware, which adds a configured origin's headers
    app.add_middleware(SealedWrites, origins=settings.cors_origins, openapi=lambda: app.openapi())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(RequestMetrics, observe=metrics.observe_request)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def _openapi(app: FastAPI) -> dict:
    """FastAPI's schema plus the /predict body, which the route parses from raw bytes itself,
    and the answers of the middleware and the error handlers (see `errors.document`)."""
    if app.openapi_schema is None:
        from fastapi.openapi.utils import get_openapi

        from app.api.schemas import PredictRequest

        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        body = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(body.pop("$defs", {}))
        schemas["PredictRequest"] = body
        document(spec)
        errors.document(spec)
        app.openapi_schema = spec
    return app.openapi_schema


def _refresh_gauges(m: Metrics, app: FastAPI) -> None:
    m.streams.set(app.state.feeds.clients)
    m.count_worker_restarts("ingest", app.state.ingestor.worker_restarts)
    m.count_worker_restarts("job", getattr(app.state.jobs, "worker_deaths", 0))
    ingestor = app.state.ingestor
    # A store outage is exactly when someone needs /metrics: its figures keep their last
    # values, tickcast_store_up says so, and everything that needs no store is still fresh.
    try:
        for status, n in app.state.jobs.counts().items():
            m.jobs.labels(status).set(n)
        m.observe_markets(
            list(ingestor.status.values()), app.state.store, ingestor.interval_s if ingestor.enabled else None
        )
    except (sqlite3.Error, OSError, StoreError, JobStoreUnavailable) as e:
        m.store_up.set(0)
        log.warning("metrics: the store could not be read (%s); its figures keep their last values", e)
    else:
        m.store_up.set(1)
    model = app.state.predictor.model
    m.model.info(
        {"id": model.id, "arch": str(model.meta.get("arch")), "seq_len": str(model.seq_len)}
        if model
        else {"id": ""}
    )


def _end_streams_on_exit_signal(feeds: Feeds) -> Callable[[], None]:
    """On SIGINT/SIGTERM, end the event streams, then let the server's own handler run.

    uvicorn waits for open responses before it runs the lifespan's shutdown, and an
    event stream never ends by itself: without this, an open dashboard would hold up
    every shutdown until the container is killed. Returns the undo.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals belong to the main thread (a server run from a test thread)
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(feeds.close)
        prev = previous[signum]
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_DFL:  # nobody else was listening: do what the signal would have
            signal.signal(signum, prev)
            signal.raise_signal(signum)

    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handle)

    def restore() -> None:
        for sig, prev in previous.items():
            if signal.getsignal(sig) is handle:
                signal.signal(sig, prev)

    return restore


def serve() -> int:
    """`tickcast serve`: uvicorn on the settings' host, port and worker count, the port claimed
    before the lifespan runs (`app.cli.serve.run`); the exit status."""
    from app.cli.serve import run

    return run(get_settings())


app = create_app()
