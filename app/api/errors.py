"""Domain errors -> HTTP answers a person can act on; never a 500 for bad input."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from app.market.ticks import TickError
from app.ml.checkpoint import CheckpointError
from app.services.jobs import UnknownJob
from app.services.predictor import NoModel, NotEnoughTicks
from app.services.registry import InvalidModelId, ModelInUse, UnknownModel
from app.services.scheduler import UnknownMarket

STATUS: dict[type[Exception], int] = {
    InvalidModelId: 422,
    UnknownModel: 404,
    UnknownJob: 404,
    UnknownMarket: 404,
    ModelInUse: 409,
    NotEnoughTicks: 422,
    TickError: 422,
    NoModel: 503,
    CheckpointError: 422,
}


def install(app: FastAPI) -> None:
    for exc_type, status in STATUS.items():
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RequestValidationError, _validation)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 without echoing the input back: the input may hold NaN (not JSON) or be
    megabytes long; `loc` already names the field and the index."""
    assert isinstance(exc, RequestValidationError)
    detail = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
              for e in exc.errors()]
    return JSONResponse({"detail": detail}, status_code=422)


def _handler(status: int):  # noqa: ANN202 - starlette's handler type
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        headers = {"Retry-After": "10"} if status == 503 else None
        return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)

    return handle
