"""The model registry: list, inspect, activate, delete."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import APIRouter, Response

from app.api.deps import KeyDep, PredictorDep, RegistryDep
from app.api.schemas import ModelOut
from app.services.registry import ModelInfo

router = APIRouter(tags=["models"])

_404 = {404: {"description": "no such model"}, 422: {"description": "malformed model id"}}
_GET = {**_404, 422: {"description": "malformed model id, or a file that is no tickcast checkpoint"}}
_ACTIVATE = {**_404, 422: {"description": "malformed model id, or the model cannot be loaded (the "
                                          "reason says why); the active model is unchanged"}}


def _out(m: ModelInfo) -> ModelOut:
    """The listing row; fields read from metadata are shown only when they have the declared type,
    so a mis-described file is listed (unloadable, with its reason) rather than failing the page."""
    meta = m.meta
    arch, seq_len, created = meta.get("arch"), meta.get("seq_len"), meta.get("created_at")
    metrics = _plain(meta.get("metrics"))
    return ModelOut(id=m.id, active=m.active, size_bytes=m.size_bytes,
                    arch=arch if isinstance(arch, str) else None,
                    seq_len=seq_len if isinstance(seq_len, int) and not isinstance(seq_len, bool) else None,
                    created_at=created if isinstance(created, str) else None,
                    metrics=metrics if isinstance(metrics, dict) else None, meta=_plain(meta),
                    loadable=m.loadable, unloadable_reason=m.unloadable_reason)


def _plain(v: Any) -> Any:
    """Metadata as strict JSON: NaN and infinities (a metric undefined on its split) become null,
    and anything that is not plain data (a tensor smuggled into a file) its type name."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if v is None or isinstance(v, str | int | bool):
        return v
    return f"<{type(v).__name__}>"


@router.get("/models", response_model=list[ModelOut])
async def list_models(registry: RegistryDep) -> list[ModelOut]:
    """Every model file, with `loadable` and, when false, the reason."""
    return [_out(m) for m in registry.list()]


@router.get("/models/{model_id}", response_model=ModelOut, responses=_GET)
async def get_model(model_id: str, registry: RegistryDep) -> ModelOut:
    return _out(registry.get(model_id))


@router.post("/models/{model_id}/activate", response_model=ModelOut, dependencies=[KeyDep],
             responses=_ACTIVATE)
async def activate_model(model_id: str, registry: RegistryDep, predictor: PredictorDep) -> ModelOut:
    """Make /predict use this model; requests in flight finish on the previous one. A model that
    cannot be loaded is refused with 422 and the reason, and changes nothing."""
    await asyncio.to_thread(predictor.activate, model_id)
    return _out(registry.get(model_id))


@router.delete("/models/{model_id}", status_code=204, dependencies=[KeyDep],
               responses={**_404, 409: {"description": "the model is active"}})
async def delete_model(model_id: str, registry: RegistryDep, predictor: PredictorDep) -> Response:
    registry.delete(model_id)
    predictor.forget(model_id)
    return Response(status_code=204)
