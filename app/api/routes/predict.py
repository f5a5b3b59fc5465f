"""Rise probabilities: from ticks in the body, or from the store's latest ticks."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from app.api.deps import MarketPath, MarketsDep, services_of
from app.api.errors import invalid
from app.api.openapi import responses
from app.api.schemas import MarketPredictionOut, PredictBatchOut, PredictionOut, PredictRequest, to_arrays
from app.services.predictor import prediction_json

router = APIRouter(tags=["predict"])

_NO_MODEL = (
    503,
    "no model is loaded yet (a first model may be training), or storage failed; see Retry-After",
    "no model is loaded yet: a first model is training (job 3f9c2a7d41b0, epoch 2/3); retry in 10 s",
)
_UNKNOWN_MODEL = (404, "`model_id` names no model in the registry")
_POST_ERRORS = responses(
    (400, "the body was not received in full", "the request body was not received in full"),
    _UNKNOWN_MODEL,
    (413, "the body is over TICKCAST_MAX_BODY_BYTES (send fewer ticks or windows)"),
    (
        422,
        "bad ticks (names the field and index), too few or too many for the model, a malformed "
        "model id, or a model that cannot be loaded",
    ),
    _NO_MODEL,
    500,
)
_GET_ERRORS = responses(
    (
        404,
        "no ticks stored for the market, or `model_id` names no model",
        "no ticks stored for kraken:ETH-USD; configure the market or import ticks",
    ),
    (
        422,
        "a bad market name, fewer stored ticks than the model needs, a malformed model id, or a "
        "model that cannot be loaded",
    ),
    (
        503,
        "no model is loaded yet (a first model may be training), storage failed, or the market's newest "
        "stored tick is older than TICKCAST_MAX_STALENESS_S allows for it; see Retry-After",
        "the newest stored tick of binance:BTC-USD is 312 s old, over the 120 s TICKCAST_MAX_STALENESS_S "
        "allows: a prediction from it would be stale; GET /markets shows the market's ingestion status "
        "and last error (a market that is not ingested needs newer ticks imported); retry in 5 s",
    ),
    500,
)


async def parse_predict(request: Request) -> PredictRequest:
    """The body parsed from bytes by pydantic-core in one pass (no stdlib json.loads, no
    intermediate dicts): parsing is most of a prediction's cost. The schema is still
    published in OpenAPI (see `app.api.openapi.build`)."""
    try:
        return PredictRequest.model_validate_json(await request.body())
    except ClientDisconnect:  # gone, or cut off by the body limit (which already answered 413)
        raise HTTPException(400, "the request body was not received in full") from None
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


@router.post(
    "/predict",
    response_model=PredictionOut | PredictBatchOut,
    responses=_POST_ERRORS,
    summary="Predict from ticks sent in the body",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
        }
    },
)
async def predict(request: Request) -> Response:
    """Probability that the price rises on the tick after the last one sent.

    Send `ticks` (oldest first, at least the model's sequence length + 1, plus 16 of
    history for a model with the tick-rule columns) for one prediction, or `windows` for
    several in one call (`{"predictions": [...]}`). The active model answers unless
    `model_id` names another. The JSON of `GET /markets/{exchange}/{symbol}/ticks?latest=N`
    is a valid body as it is.
    """
    # The hot path: no Depends (resolving two of them cost ~10% of a request's CPU) and the
    # answer serialised by hand (the shape is PredictionOut / PredictBatchOut).
    services = services_of(request)
    predictor, max_ticks = services.predictor, services.settings.max_ticks
    body = await parse_predict(request)
    model_id = body.model_id
    if body.ticks is not None:
        if len(body.ticks) > max_ticks:
            raise invalid(
                ("body", "ticks"),
                f"ticks has {len(body.ticks)} entries; at most {max_ticks} are accepted (TICKCAST_MAX_TICKS)",
                "too_long",
            )
        ticks = to_arrays(body.ticks)
        del body  # don't hold a hundred objects per request across the await (GC pressure)
        return _json(prediction_json(await predictor.predict(ticks, model_id)))
    wins = body.windows or []
    total = sum(len(w) for w in wins)
    if total > max_ticks * 16:
        raise invalid(
            ("body", "windows"),
            f"windows hold {total} ticks in all, over {max_ticks * 16} (16 x TICKCAST_MAX_TICKS); send fewer",
            "too_long",
        )
    arrays = [to_arrays(w) for w in wins]
    del body, wins
    preds = await predictor.predict_many(arrays, model_id)
    return _json({"predictions": [prediction_json(p) for p in preds]})


def _json(content: object) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


@router.get(
    "/predict/{exchange}/{symbol}",
    response_model=MarketPredictionOut,
    responses=_GET_ERRORS,
    summary="Predict from a market's latest stored ticks",
)
async def predict_market(
    market: MarketPath,
    markets: MarketsDep,
    model_id: Annotated[
        str | None, Query(max_length=128, description="a registry id; default: the active model")
    ] = None,
) -> Response:
    """The same as POST /predict, from the service's own latest stored ticks of a market
    (configured or imported): as many as the model needs, ending at the newest. It adds how
    current they are: `data_age_s` (now minus the newest tick's time) and `ingestion_lag_s`
    (how long that tick took to be stored, for a market this service ingests). A market whose
    newest tick is older than its TICKCAST_MAX_STALENESS_S gets a 503 instead of a stale answer."""
    latest = await markets.predict_latest(market, model_id)
    return _json(prediction_json(latest.prediction, freshness=latest.freshness))
