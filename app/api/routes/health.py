"""Liveness, readiness, what a client needs to know, and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api import advice
from app.api.deps import MarketsDep, ServicesDep
from app.api.health_schemas import HealthOut, InfoOut, NotReadyOut, ReadyOut
from app.api.market_schemas import MarketRef
from app.api.metrics import Metrics
from app.api.openapi import responses

router = APIRouter(tags=["operations"])

_METRICS_EXAMPLE = """# HELP tickcast_predictions_total Predictions served
# TYPE tickcast_predictions_total counter
tickcast_predictions_total 1523.0
# HELP tickcast_http_requests_total HTTP requests
# TYPE tickcast_http_requests_total counter
tickcast_http_requests_total{method="POST",route="/predict",status="200"} 1523.0
"""
_RETRY = {
    "Retry-After": {"description": "seconds to wait before asking again", "schema": {"type": "integer"}}
}


@router.get("/health", response_model=HealthOut, summary="Liveness")
async def health() -> HealthOut:
    """The process answers; says nothing about models or storage (see /ready)."""
    return HealthOut(status="ok")


@router.get(
    "/info",
    response_model=InfoOut,
    summary="What a client needs to know",
    responses=responses((503, "the tick store cannot be read; see Retry-After"), 500),
)
async def info(services: ServicesDep, markets: MarketsDep, request: Request) -> InfoOut:
    """What a client needs to know before it starts: the version, whether writes need a key,
    the markets (configured ones, then the others the store holds, e.g. imported), the
    serving device."""
    return InfoOut(
        version=request.app.version,
        auth_required=services.settings.api_key is not None,
        markets=[
            MarketRef(exchange=m.exchange, symbol=m.symbol, scheduled=m.scheduled) for m in markets.known()
        ],
        device=str(services.predictor.device),
    )


@router.get(
    "/ready",
    response_model=ReadyOut,
    summary="Readiness",
    responses={
        503: {
            "model": NotReadyOut,
            "headers": _RETRY,
            "description": "not ready, with the reason (and, while a first model trains, Retry-After)",
        },
        **responses(500),
    },
)
async def ready(services: ServicesDep) -> ReadyOut | JSONResponse:
    """Ready when the store is open and a model is loaded. Otherwise 503 with the reason: an
    ACTIVE model that cannot be loaded is named, with why and what to do, while the rest of the
    service (listing, activating another model, training) keeps answering."""
    r = services.readiness()
    if r.model_id is not None:
        return ReadyOut(status="ready", model_id=r.model_id)
    reason = advice.not_ready(r.reason, r.remedy)
    body = NotReadyOut(status="not ready", reason=reason, detail=reason)
    headers = {"Retry-After": str(r.retry_after_s)} if r.retry_after_s is not None else None
    return JSONResponse(body.model_dump(), 503, headers=headers)


def metrics_router(m: Metrics) -> APIRouter:
    """/metrics, bound to the app's own Metrics (one registry per app: see `app.api.metrics`)."""
    r = APIRouter(tags=["operations"])

    @r.get(
        "/metrics",
        response_class=Response,
        summary="Prometheus metrics",
        responses={
            200: {
                "description": "the Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}, "example": _METRICS_EXAMPLE}},
            }
        },
    )
    async def metrics() -> Response:
        """Everything to alert on, for a Prometheus scrape: requests by route and status with their
        latency, predictions and their batches, the active model, jobs, streams, worker restarts
        and per-market ingestion figures."""
        # off the event loop: a scrape reads the store (a big market's tick count takes a while)
        return Response(await asyncio.to_thread(m.render), media_type=m.content_type)

    return r
