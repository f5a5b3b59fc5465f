"""The model registry: list, inspect, activate, delete."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from app.api.deps import KeyDep, PredictorDep, RegistryDep
from app.api.schemas import ModelOut
from app.services.registry import ModelInfo

router = APIRouter(tags=["models"])

_404 = {404: {"description": "no such model"}, 422: {"description": "malformed model id"}}


def _out(m: ModelInfo) -> ModelOut:
    return ModelOut(id=m.id, active=m.active, size_bytes=m.size_bytes, arch=m.meta.get("arch"),
                    seq_len=m.meta.get("seq_len"), created_at=m.meta.get("created_at"),
                    metrics=m.meta.get("metrics"), meta=m.meta)


@router.get("/models", response_model=list[ModelOut])
async def list_models(registry: RegistryDep) -> list[ModelOut]:
    return [_out(m) for m in registry.list()]


@router.get("/models/{model_id}", response_model=ModelOut, responses=_404)
async def get_model(model_id: str, registry: RegistryDep) -> ModelOut:
    return _out(registry.get(model_id))


@router.post("/models/{model_id}/activate", response_model=ModelOut, dependencies=[KeyDep],
             responses=_404)
async def activate_model(model_id: str, registry: RegistryDep, predictor: PredictorDep) -> ModelOut:
    """Make /predict use this model; requests in flight finish on the previous one."""
    await asyncio.to_thread(predictor.activate, model_id)
    return _out(registry.get(model_id))


@router.delete("/models/{model_id}", status_code=204, dependencies=[KeyDep],
               responses={**_404, 409: {"description": "the model is active"}})
async def delete_model(model_id: str, registry: RegistryDep, predictor: PredictorDep) -> Response:
    registry.delete(model_id)
    predictor.forget(model_id)
    return Response(status_code=204)
