"""The model registry: list, inspect, activate, delete."""

from __future__ import annotations

import asyncio
import math
from typing import Annotated, Any

from fastapi import APIRouter, Path, Response

from app.api.deps import KeyDep, PredictorDep, RegistryDep
from app.api.openapi import responses
from app.api.schemas import ModelOut
from app.services.registry import ModelInfo

router = APIRouter(tags=["models"])

_NO_MODEL = (404, "no such model", "no model 'cnn-nope'; GET /models lists the available ones")
_STORAGE = (
    503,
    "the models folder cannot be read or written (permissions, a full disk); nothing was "
    "changed, see Retry-After",
    "the models folder models: not writable (Permission denied); nothing was changed; make "
    "TICKCAST_MODELS_DIR writable by the service, retry in 30 s",
)
_GET = responses(
    _NO_MODEL, (422, "a malformed model id, or a file that is no tickcast checkpoint"), _STORAGE, 500
)
_ACTIVATE = responses(
    401,
    _NO_MODEL,
    (
        422,
        "a malformed model id, or a model that cannot be loaded (the "
        "reason says why); the active model is unchanged",
    ),
    _STORAGE,
    500,
)
_DELETE = responses(
    401,
    _NO_MODEL,
    (409, "the model is active: activate another one first"),
    (422, "a malformed model id"),
    _STORAGE,
    500,
)
ModelId = Annotated[
    str, Path(description="a registry id, as GET /models lists them", examples=["cnn-20261125-194816-1cd8d3"])
]


def _out(m: ModelInfo) -> ModelOut:
    """The listing row; fields read from metadata are shown only when they have the declared type,
    so a mis-described file is listed (unloadable, with its reason) rather than failing the page."""
    meta = m.meta
    return ModelOut(
        id=m.id,
        active=m.active,
        size_bytes=m.size_bytes,
        arch=meta.arch,
        seq_len=meta.seq_len,
        created_at=meta.created_at,
        metrics=None if meta.metrics is None else _plain(meta.metrics),
        meta=_plain(meta.raw),
        loadable=m.loadable,
        unloadable_reason=m.unloadable_reason,
    )


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


@router.get(
    "/models", response_model=list[ModelOut], summary="List the models", responses=responses(_STORAGE, 500)
)
async def list_models(registry: RegistryDep) -> list[ModelOut]:
    """Every model file in the registry (TICKCAST_MODELS_DIR), the active one marked, with its
    architecture, metrics and metadata, and `loadable` with, when false, the reason: a damaged
    file is listed rather than hidden."""
    return [_out(m) for m in registry.list()]


@router.get("/models/{model_id}", response_model=ModelOut, summary="One model", responses=_GET)
async def get_model(model_id: ModelId, registry: RegistryDep) -> ModelOut:
    """One model as GET /models lists it: metrics, metadata, and whether it can be loaded."""
    return _out(registry.get(model_id))


@router.post(
    "/models/{model_id}/activate",
    response_model=ModelOut,
    dependencies=[KeyDep],
    summary="Make a model the active one",
    responses=_ACTIVATE,
)
async def activate_model(model_id: ModelId, registry: RegistryDep, predictor: PredictorDep) -> ModelOut:
    """Make /predict use this model; requests in flight finish on the previous one. A model that
    cannot be loaded is refused with 422 and the reason, and changes nothing."""
    await asyncio.to_thread(predictor.activate, model_id)
    return _out(registry.get(model_id))


@router.delete(
    "/models/{model_id}", status_code=204, dependencies=[KeyDep], summary="Delete a model", responses=_DELETE
)
async def delete_model(model_id: ModelId, registry: RegistryDep, predictor: PredictorDep) -> Response:
    """Remove the model's file from the registry. The active model is refused (409): activate
    another first, so /predict always has one."""
    registry.delete(model_id)
    predictor.forget(model_id)
    return Response(status_code=204)
