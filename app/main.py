"""The FastAPI app: `create_app(settings)` wires the HTTP layer to the services.

The lifespan owns every long-lived part (`app.services.container.Services`), so tests
build as many independent apps as they like and a shutdown finishes requests in
flight, then stops jobs (recorded as interrupted) before the store closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from types import FrameType
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import errors, openapi
from app.api.metrics import Metrics
from app.api.middleware import BodyLimit, RequestMetrics, SealedWrites
from app.api.routes import dashboard, docs, health, jobs, live, markets, models, predict, stream
from app.market.store import StoreError
from app.services.container import Services
from app.services.feeds import Feeds
from app.services.jobs.manager import StoreUnavailable as JobStoreUnavailable
from app.settings import Settings, get_settings

log = logging.getLogger("tickcast")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _configure_logging(settings)
        services = Services.build(settings, on_batch=metrics.observe_batch, on_job_finish=metrics.observe_job)
        app.state.services = services
        await services.start()
        restore_signals = _end_streams_on_exit_signal(services.feeds)
        try:
            yield
        finally:
            restore_signals()
            await services.stop()

    app = FastAPI(
        title="tickcast",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,  # served from vendored files: app/api/routes/docs.py
        description="Probability that a market's price rises on the next trade tick.",
    )
    errors.install(app)
    app.openapi = lambda: openapi.build(app)  # type: ignore[method-assign]  # FastAPI's documented override
    metrics.on_scrape(lambda m: _refresh_gauges(m, app.state.services))
    routers = (
        predict.router,
        jobs.router,
        models.router,
        markets.router,
        live.router,
        stream.router,
        health.router,
    )
    for r in (*routers, health.metrics_router(metrics), dashboard.router, docs.router):
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


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "debug":  # two lines per market per pull otherwise
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _refresh_gauges(m: Metrics, services: Services) -> None:
    """The figures read at scrape time (see `Metrics.on_scrape`)."""
    ingestor, manager = services.ingestor, services.jobs
    m.streams.set(services.feeds.clients)
    m.count_worker_restarts("ingest", ingestor.worker_restarts)
    m.count_worker_restarts("job", manager.worker_deaths)
    # A store outage is exactly when someone needs /metrics: its figures keep their last
    # values, tickcast_store_up says so, and everything that needs no store is still fresh.
    unreadable: tuple[type[Exception], ...] = (
        *services.store.errors,
        OSError,
        StoreError,
        JobStoreUnavailable,
    )
    try:
        for status, n in manager.counts().items():
            m.jobs.labels(status).set(n)
        m.observe_markets(
            ingestor.statuses(), services.store, ingestor.interval_s if ingestor.enabled else None
        )
    except unreadable as e:
        m.store_up.set(0)
        log.warning("metrics: the store could not be read (%s); its figures keep their last values", e)
    else:
        m.store_up.set(1)
    live = services.live
    try:
        m.observe_live(live.current_metrics(), live.stats.predictions, live.stats.errors)
    except live.log.errors as e:
        log.warning("metrics: the prediction log could not be read (%s)", e)
    model = services.predictor.model
    m.model.info(
        {"id": model.id, "arch": model.meta.arch, "seq_len": str(model.seq_len)} if model else {"id": ""}
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
