"""Liveness, readiness, what a client needs to know, and Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import IngestorDep, MetricsDep, PredictorDep, SettingsDep, StoreDep
from app.api.errors import responses
from app.api.schemas import HealthOut, InfoOut, MarketRef, NotReadyOut, ReadyOut
from app.services.predictor import NoModel

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
async def info(
    settings: SettingsDep, predictor: PredictorDep, ingestor: IngestorDep, store: StoreDep, request: Request
) -> InfoOut:
    """What a client needs to know before it starts: the version, whether writes need a key,
    the markets (configured ones, then the others the store holds, e.g. imported), the
    serving device."""
    configured = list(ingestor.status)
    others = [m for m in store.markets() if m not in ingestor.status]
    return InfoOut(
        version=request.app.version,
        auth_required=settings.api_key is not None,
        markets=[MarketRef(exchange=e, symbol=s, scheduled=True) for e, s in configured]
        + [MarketRef(exchange=e, symbol=s, scheduled=False) for e, s in others],
        device=str(predictor.device),
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
async def ready(predictor: PredictorDep, store: StoreDep) -> ReadyOut | JSONResponse:
    """Ready when the store is open and a model is loaded. Otherwise 503 with the reason: an
    ACTIVE model that cannot be loaded is named, with why and what to do, while the rest of the
    service (listing, activating another model, training) keeps answering."""
    try:
        store.schema_version  # noqa: B018 - touches the connection
    except Exception as e:
        return _not_ready(f"tick store unavailable: {e}")
    model = predictor.model
    if model is None:
        return _not_ready(predictor.no_model_reason(), {"Retry-After": str(NoModel.retry_after_s)})
    return ReadyOut(status="ready", model_id=model.id)


def _not_ready(reason: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = NotReadyOut(status="not ready", reason=reason, detail=reason)
    return JSONResponse(body.model_dump(), 503, headers=headers)


@router.get(
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
async def metrics(m: MetricsDep) -> Response:
    """Everything to alert on, for a Prometheus scrape: requests by route and status with their
    latency, predictions and their batches, the active model, jobs, streams, worker restarts
    and per-market ingestion figures."""
    # off the event loop: a scrape reads the store (a big market's tick count takes a while)
    return Response(await asyncio.to_thread(m.render), media_type=m.content_type)
