"""A prediction, what it says about the model behind it and the data under it, and its JSON.

Every answer that carries a probability also says how old the model is and which stretch
of trades it learnt from (a model trained on last month's market may be answering about
today's); the answers built from stored ticks add how old the newest of them is and how long
it took to be stored. `prediction_json` writes all of it, the same way for POST and GET
/predict and the stream.

A model's provenance is read from its metadata once per loaded model object
(`ProvenanceCache`), not per request: /predict is a hot path.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime

from app.ml.checkpoint import Model
from app.ml.meta import ModelMeta

PRUNE_AT = 32  # cached model objects before the dead ones are dropped


class NotEnoughTicks(ValueError):
    """Fewer ticks than the model needs: its sequence length + 1 and the history its columns read."""

    def __init__(self, needed: int, got: int, index: int | None = None, *, events: bool = False) -> None:
        self.needed, self.got, self.index = needed, got, index
        where = "" if index is None else f"window {index}: "
        what = "ticks at distinct times (it merges trades sharing a timestamp)" if events else "ticks"
        super().__init__(
            f"{where}need at least {needed} {what} for this model (its window + 1 and history), got {got}"
        )


@dataclass(frozen=True, slots=True)
class Prediction:
    probability: float
    decision: bool  # probability >= threshold
    threshold: float
    model_id: str
    as_of: float  # time of the last tick given
    calibrator_version: int = 0  # 0: the checkpoint's own calibrator; later: refitted live
    model_age_s: float | None = None  # when it was made minus when the model was trained
    train_start: float | None = None  # the model's training data: first tick time (unix s)
    train_end: float | None = None  # ... and last tick time


@dataclass(frozen=True, slots=True)
class Freshness:
    """How current the stored ticks under an answer are, when it was made."""

    data_age_s: float  # now minus the newest stored tick's time
    ingestion_lag_s: float | None  # that pull's wall time minus the tick's; None: not ingested here


_UNSCORED: dict[str, object] = dict.fromkeys(
    ("probability", "decision", "threshold", "model_id", "calibrator_version")
    + ("model_age_s", "train_start", "train_end")
)


def prediction_json(
    p: Prediction | None, *, as_of: bool = True, freshness: Freshness | None = None
) -> dict[str, object]:
    """A prediction as every JSON answer writes it, keys in this order: POST and GET /predict
    (the shape of PredictionOut; GET adds `freshness`, MarketPredictionOut), and each tick of
    /stream, which leaves `as_of` out (it is the tick's own time), adds the update's
    `freshness`, and writes nulls for a tick no model scored (`p` None)."""
    if p is None:
        out = dict(_UNSCORED)
    else:
        out = {
            "probability": p.probability,
            "decision": p.decision,
            "threshold": p.threshold,
            "model_id": p.model_id,
            "calibrator_version": p.calibrator_version,
            "model_age_s": p.model_age_s,
            "train_start": p.train_start,
            "train_end": p.train_end,
        }
        if as_of:
            out["as_of"] = p.as_of
    if freshness is not None:
        out["data_age_s"] = freshness.data_age_s
        out["ingestion_lag_s"] = freshness.ingestion_lag_s
    return out


@dataclass(frozen=True, slots=True)
class Provenance:
    """What a model's file says about when it was made and from which data (None: not said)."""

    created: float | None  # meta.created_at, unix s
    train_start: float | None
    train_end: float | None

    @classmethod
    def of(cls, meta: ModelMeta) -> Provenance:
        return cls(
            _unix(meta.created_at), _seconds(meta.data.get("start_time")), _seconds(meta.data.get("end_time"))
        )

    def age(self, now: float) -> float | None:
        return None if self.created is None else now - self.created


class ProvenanceCache:
    """Each loaded model object's provenance, read at its first prediction. Keyed by the object,
    not the id: a recalibrated model is a new object with the same id and file. Held weakly, so
    a model swapped out is freed as before."""

    def __init__(self) -> None:
        self._by_object: dict[int, tuple[weakref.ref[Model], Provenance]] = {}

    def of(self, model: Model) -> Provenance:
        hit = self._by_object.get(id(model))
        if hit is not None and hit[0]() is model:
            return hit[1]
        if len(self._by_object) >= PRUNE_AT:
            self._by_object = {k: v for k, v in self._by_object.items() if v[0]() is not None}
        found = Provenance.of(model.meta)
        self._by_object[id(model)] = (weakref.ref(model), found)
        return found


def _unix(iso: str | None) -> float | None:
    """An ISO 8601 time as unix seconds (a time without a zone is UTC); None if it is not one."""
    if not iso:
        return None
    try:
        t = datetime.fromisoformat(iso)
    except ValueError:
        return None
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()


def _seconds(v: object) -> float | None:
    """A finite number of seconds from a file's metadata; None for anything else."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)
