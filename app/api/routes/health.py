"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import MetricsDep, PredictorDep, SettingsDep, StoreDep

router = APIRouter(tags=["operations"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process answers; says nothing about models."""
    return {"status": "ok"}


@router.get("/info")
async def info(settings: SettingsDep, predictor: PredictorDep, request: Request) -> dict[str, object]:
    """What a client needs to know before it starts: whether writes need a key, the
    configured markets, the serving device."""
    return {"version": request.app.version, "auth_required": settings.api_key is not None,
            "markets": [dict(zip(("exchange", "symbol"), m.split(":", 1), strict=True))
                        for m in settings.markets],
            "device": str(predictor.device)}


@router.get("/ready", responses={503: {"description": "not ready, with the reason"}})
async def ready(predictor: PredictorDep, store: StoreDep) -> JSONResponse:
    """Ready when the store is open and a model is loaded. Otherwise 503 with the reason: an
    ACTIVE model that cannot be loaded is named, with why and what to do, while the rest of the
    service (listing, activating another model, training) keeps answering."""
    try:
        store.schema_version  # noqa: B018 - touches the connection
    except Exception as e:  # noqa: BLE001 - any failure means not ready
        return JSONResponse({"status": "not ready", "reason": f"tick store unavailable: {e}"}, 503)
    model = predictor.model
    if model is None:
        return JSONResponse({"status": "not ready", "reason": predictor.no_model_reason()}, 503,
                            headers={"Retry-After": "10"})
    return JSONResponse({"status": "ready", "model_id": model.id})


@router.get("/metrics", response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=m.content_type)
