"""Live evaluation: each model's rolling figures on the ticks that followed its predictions, the
promotion history, and the prediction log (JSON or CSV, optionally replayed)."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Any, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from app.api.deps import LiveDep, MarketPath, MarketsDep
from app.api.errors import invalid
from app.api.live_schemas import MarketLiveOut, ModelLiveOut, PredictionLogOut, PredictionsOut
from app.api.openapi import responses
from app.api.routes.models import ModelId
from app.services.live import views
from app.services.live.log import Query as LogQuery

router = APIRouter(tags=["live"])

DEFAULT_LIMIT = 1_000
MAX_LIMIT = 100_000
_STORE = (503, "the store cannot be read (locked, unreadable); see Retry-After")
_CSV_COLUMNS = list(PredictionLogOut.model_fields)
_CSV_EXAMPLE = (
    ",".join(_CSV_COLUMNS)
    + "\nsynthetic,BTC-USD,ticknet-20261202-131440-c348c8,active,0,1796217200.0,60412,0.2874,0,"
    "1796217200.4,1796217202.9,\n"
)


@router.get(
    "/markets/{exchange}/{symbol}/live",
    response_model=MarketLiveOut,
    summary="Live leaderboard of a market",
    responses=responses((404, "neither a configured market nor one with stored ticks"), 422, _STORE, 500),
)
async def market_live(market: MarketPath, markets: MarketsDep, live: LiveDep) -> dict[str, Any]:
    """The active model and its shadows on this market's live ticks: rolling AUC, Brier, log loss,
    ECE, base rate, PPV/NPV over the last 1,000 and 10,000 outcomes and the last hour and day,
    against the validation figures; alerts; a reliability table; the newest promotion decisions."""
    return await asyncio.to_thread(views.market_live, live, markets, market)


@router.get(
    "/models/{model_id}/live",
    response_model=ModelLiveOut,
    summary="A model's live record",
    responses=responses((404, "no such model"), (422, "a malformed model id"), _STORE, 500),
)
async def model_live(model_id: ModelId, live: LiveDep) -> dict[str, Any]:
    """The model's rolling live figures on every market it scored, the promotion decisions that
    name it, and the calibrators refitted for it on live outcomes."""
    return await asyncio.to_thread(views.model_live, live, model_id)


@router.get(
    "/predictions",
    response_model=None,
    summary="The prediction log",
    responses={
        200: {
            "model": PredictionsOut,
            "description": "JSON, or CSV with format=csv (the same columns)",
            "content": {"text/csv": {"schema": {"type": "string"}, "example": _CSV_EXAMPLE}},
        },
        **responses((422, "a bad filter or range"), _STORE, 500),
    },
)
async def prediction_log(
    live: LiveDep,
    exchange: str | None = Query(None, max_length=64, description="only this exchange's markets"),
    symbol: str | None = Query(None, max_length=64, description="only markets of this symbol"),
    model_id: str | None = Query(None, max_length=128, description="only this model's predictions"),
    start: float | None = Query(None, allow_inf_nan=False, description="tick time, unix s, inclusive"),
    end: float | None = Query(None, allow_inf_nan=False, description="tick time, unix s, exclusive"),
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="at most this many, the oldest first"),
    format: Literal["json", "csv"] = Query("json", description="json, or csv (the same columns)"),
    replay: bool = Query(
        False, description=f"recompute each (at most {views.REPLAY_MAX}) from the stored ticks and the model"
    ),
) -> Response:
    """Every live prediction logged: model, calibrator version, market, the position of the tick its
    window ended at, the probability, and its outcome once the next tick was stored."""
    if start is not None and end is not None and end < start:
        raise invalid(("query", "end"), "end must not be before start")
    query = LogQuery(exchange, symbol, model_id, start, end, limit)
    rows, more = await asyncio.to_thread(views.predictions, live, query, replay=replay)
    if format == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=_CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return Response(buf.getvalue(), media_type="text/csv", headers={"X-Truncated": str(more).lower()})
    body = PredictionsOut(predictions=[PredictionLogOut(**r) for r in rows], truncated=more)
    return Response(body.model_dump_json(), media_type="application/json")
