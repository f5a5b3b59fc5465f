"""Rise probabilities: from ticks in the body, or from the store's latest ticks."""

from __future__ import annotations

import json

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

from app.api.deps import PredictorDep, StoreDep
from app.api.schemas import PredictBatchOut, PredictionOut, PredictRequest, to_arrays
from app.services.predictor import Prediction, Predictor

router = APIRouter(tags=["predict"])

_ERRORS = {422: {"description": "bad ticks (names the field and index) or too few for the model"},
           413: {"description": "body too large"},
           503: {"description": "no model loaded yet (a first model may be training)"}}


def _out(p: Prediction) -> PredictionOut:
    return PredictionOut(probability=p.probability, decision=p.decision, threshold=p.threshold,
                         model_id=p.model_id, as_of=p.as_of)


async def parse_predict(request: Request) -> PredictRequest:
    """The body parsed from bytes by pydantic-core in one pass (no stdlib json.loads, no
    intermediate dicts): parsing is most of a prediction's cost. The schema is still
    published in OpenAPI (see `app.main`)."""
    try:
        return PredictRequest.model_validate_json(await request.body())
    except ClientDisconnect:  # gone, or cut off by the body limit (which already answered 413)
        raise HTTPException(400, "the request body was not received in full") from None
    except ValidationError as e:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        ) from None


@router.post("/predict", response_model=PredictionOut | PredictBatchOut, responses=_ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/PredictRequest"}}}}})
async def predict(request: Request) -> Response:
    """Probability that the price rises on the tick after the last one sent."""
    # The hot path: no Depends (resolving two of them cost ~10% of a request's CPU) and the
    # answer serialised by hand (the shape is PredictionOut / PredictBatchOut).
    predictor: Predictor = request.app.state.predictor
    max_ticks: int = request.app.state.settings.max_ticks
    body = await parse_predict(request)
    model_id = body.model_id
    if body.ticks is not None:
        if len(body.ticks) > max_ticks:
            raise HTTPException(422, f"ticks has {len(body.ticks)} entries; at most "
                                     f"{max_ticks} are accepted")
        ticks = to_arrays(body.ticks)
        del body  # don't hold a hundred objects per request across the await (GC pressure)
        return _json(_dict(await predictor.predict(ticks, model_id)))
    wins = body.windows or []
    total = sum(len(w) for w in wins)
    if total > max_ticks * 16:
        raise HTTPException(422, f"windows hold {total} ticks in all; send fewer")
    arrays = [to_arrays(w) for w in wins]
    del body, wins
    preds = await predictor.predict_many(arrays, model_id)
    return _json({"predictions": [_dict(p) for p in preds]})


def _dict(p: Prediction) -> dict[str, object]:
    return {"probability": p.probability, "decision": p.decision, "threshold": p.threshold,
            "model_id": p.model_id, "as_of": p.as_of}


def _json(content: object) -> Response:
    return Response(json.dumps(content, separators=(",", ":")), media_type="application/json")


@router.get("/predict/{exchange}/{symbol}", response_model=PredictionOut, responses=_ERRORS)
async def predict_market(exchange: str, symbol: str, predictor: PredictorDep, store: StoreDep,
                         model_id: str | None = None) -> PredictionOut:
    """The same from the service's own latest stored ticks of a market."""
    seq_len = await predictor.seq_len(model_id)
    ticks = store.latest(exchange, symbol, seq_len + 1, ids=False)
    if len(ticks) == 0:
        raise HTTPException(404, f"no ticks stored for {exchange}:{symbol}; configure the market "
                                 "or import ticks")
    return _out(await predictor.predict(ticks, model_id))
