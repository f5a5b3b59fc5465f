"""Rise probabilities: from ticks in the body, or from the store's latest ticks."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from app.api.deps import PredictorDep, SettingsDep, StoreDep
from app.api.schemas import PredictBatchOut, PredictionOut, PredictRequest, to_arrays
from app.services.predictor import Prediction

router = APIRouter(tags=["predict"])

_ERRORS = {422: {"description": "bad ticks (names the field and index) or too few for the model"},
           413: {"description": "body too large"},
           503: {"description": "no model loaded yet (a first model may be training)"}}


def _out(p: Prediction) -> PredictionOut:
    return PredictionOut(probability=p.probability, decision=p.decision, threshold=p.threshold,
                         model_id=p.model_id, as_of=p.as_of)


@router.post("/predict", response_model=PredictionOut | PredictBatchOut, responses=_ERRORS)
async def predict(body: PredictRequest, predictor: PredictorDep,
                  settings: SettingsDep) -> PredictionOut | PredictBatchOut:
    """Probability that the price rises on the tick after the last one sent."""
    if body.ticks is not None:
        if len(body.ticks) > settings.max_ticks:
            raise HTTPException(422, f"ticks has {len(body.ticks)} entries; at most "
                                     f"{settings.max_ticks} are accepted")
        return _out(await predictor.predict(to_arrays(body.ticks), body.model_id))
    total = sum(len(w) for w in body.windows or [])
    if total > settings.max_ticks * 16:
        raise HTTPException(422, f"windows hold {total} ticks in all; send fewer")
    preds = await predictor.predict_many([to_arrays(w) for w in body.windows or []], body.model_id)
    return PredictBatchOut(predictions=[_out(p) for p in preds])


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
