"""Request and response bodies: the HTTP contract, validated at the edge.

Bad input is stopped here with a 422 that names the field and the index, so
nothing malformed reaches the model, the store or a job. Every field carries a
description and every model an example: they are the OpenAPI document's text,
and the contract test (tests/api/test_contract.py) holds the service to them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, model_validator
from pydantic.config import JsonDict, JsonValue

from app.market.markets import NAME_MAX, NAME_PATTERN
from app.market.ticks import TickArrays
from app.ml.config import API_SETTINGS, check_splits
from app.services.jobs.spec import MAX_WORKERS

# Strict: a JSON number only (an integer is a fine float); `true` and `"6000"` are not numbers.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]

EXAMPLE_MODEL_ID = "cnn-20261125-194816-1cd8d3"
_JOB_ID = "3f9c2a7d41b0"


class ErrorOut(BaseModel):
    """Every error but a 422: what went wrong and what to do about it."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"detail": f"no model {EXAMPLE_MODEL_ID!r}; GET /models lists the models"}]
        }
    )

    detail: str = Field(
        description="what went wrong and what to do next, in one sentence a person can act on"
    )


class TickIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"time": 1534131395.0, "price": 6356.73, "amount": 0.96}]},
    )

    time: Annotated[
        float,
        Field(strict=True, allow_inf_nan=False, ge=0, description="when the trade happened, unix seconds"),
    ]
    price: Annotated[
        float,
        Field(
            strict=True,
            allow_inf_nan=False,
            gt=0,
            description="the trade's price (> 0), in the quote currency",
        ),
    ]
    amount: Annotated[
        float,
        Field(
            strict=True,
            allow_inf_nan=False,
            ge=0,
            description="the traded quantity (>= 0), in the base currency",
        ),
    ]


def _check_order(ticks: list[TickIn], where: str) -> None:
    for i in range(1, len(ticks)):
        if ticks[i].time < ticks[i - 1].time:
            raise ValueError(
                f"{where}[{i}].time ({ticks[i].time}) is before {where}[{i - 1}].time "
                f"({ticks[i - 1].time}); send ticks oldest first"
            )


def to_arrays(ticks: list[TickIn]) -> TickArrays:
    rows = np.array([(t.time, t.price, t.amount) for t in ticks], dtype=np.float64).reshape(-1, 3)
    return TickArrays(rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())


_EXAMPLE_TICKS: list[JsonValue] = [
    {"time": 1534131395 + i, "price": 6356.7 + (i % 3) * 0.5, "amount": 0.1} for i in range(33)
]
_IGNORED = (
    "ignored; accepted so that the JSON of GET /markets/{exchange}/{symbol}/ticks can be posted here as it is"
)


class PredictRequest(BaseModel):
    """Either `ticks` (one prediction, as of the last tick) or `windows` (several at once).

    `exchange`, `symbol` and `count` are accepted and ignored, so the JSON answer of
    `GET /markets/{exchange}/{symbol}/ticks?latest=N` is a valid body as it is."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"ticks": _EXAMPLE_TICKS}, {"ticks": _EXAMPLE_TICKS, "model_id": EXAMPLE_MODEL_ID}]
        },
    )

    ticks: list[TickIn] | None = Field(
        None,
        description="recent ticks, oldest first; at least the model's sequence length + 1, plus 16 of "
        "history for a model with the tick-rule columns (a 422 says how many)",
    )
    windows: list[list[TickIn]] | None = Field(
        None, max_length=1024, description="several tick lists, one prediction each"
    )
    model_id: str | None = Field(None, max_length=128, description="a registry id; default: the active model")
    exchange: str | None = Field(None, max_length=NAME_MAX, description=_IGNORED)
    symbol: str | None = Field(None, max_length=NAME_MAX, description=_IGNORED)
    count: int | None = Field(None, ge=0, strict=True, description=_IGNORED)

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.ticks is None) == (self.windows is None):
            raise ValueError("give exactly one of 'ticks' or 'windows'")
        if self.ticks is not None:
            _check_order(self.ticks, "ticks")
        for k, w in enumerate(self.windows or []):
            _check_order(w, f"windows[{k}]")
        return self


_PREDICTION: JsonDict = {
    "probability": 0.29,
    "decision": False,
    "threshold": 0.34,
    "model_id": EXAMPLE_MODEL_ID,
    "calibrator_version": 0,
    "model_age_s": 86412.5,
    "train_start": 1534040000.0,
    "train_end": 1534126000.0,
    "as_of": 1534131427.0,
}


class PredictionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICTION]})

    probability: float = Field(description="probability that the next tick's price is strictly higher")
    decision: bool = Field(description="probability >= the model's threshold")
    threshold: float = Field(
        description="the model's decision threshold, chosen on its validation split by its threshold "
        "rule (a model trained before the rules: the share of rises in its training data)"
    )
    model_id: str = Field(description="the model that answered")
    calibrator_version: int = Field(
        description="which calibrator turned the model's output into this probability: 0 is the one "
        "its file holds (fitted on its validation split), later ones were refitted on live outcomes"
    )
    model_age_s: float | None = Field(
        description="seconds since the model was trained (its file's created_at); null when the file "
        "does not say"
    )
    train_start: float | None = Field(
        description="time of the first tick the model was trained on (unix s); null when its file "
        "does not say"
    )
    train_end: float | None = Field(
        description="time of the last tick the model was trained on (unix s): a prediction long after it "
        "comes from a model that has not seen the recent market; null when its file does not say"
    )
    as_of: float = Field(description="time of the last tick the prediction uses")


class MarketPredictionOut(PredictionOut):
    """A prediction from a market's stored ticks, with how current they are."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{**_PREDICTION, "data_age_s": 3.2, "ingestion_lag_s": 1.1}]}
    )

    data_age_s: float = Field(
        description="seconds from the market's newest stored tick to this answer; over the market's "
        "TICKCAST_MAX_STALENESS_S the answer is a 503 instead"
    )
    ingestion_lag_s: float | None = Field(
        description="seconds the newest pulled tick took to reach the store (the pull's end minus its "
        "trade time); null for a market this service does not ingest (imported ticks), and until a pull "
        "since it started stored ticks"
    )


class PredictBatchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"predictions": [_PREDICTION]}]})

    predictions: list[PredictionOut] = Field(description="one prediction per window, in the order sent")


def _train_config_model() -> type[BaseModel]:
    """TrainConfigIn, generated from the settings the API takes (`app.ml.config`): their names,
    defaults, bounds and help are declared there once, for the API, the jobs and the CLI alike."""
    fields: dict[str, Any] = {}
    for s in API_SETTINGS:
        p = s.param
        kind = Literal.__getitem__(s.choices) if s.choices else s.kind
        if p.canonical is not None and not s.choices:  # a rule with its own spellings: a 422 on the field
            kind = Annotated[kind, AfterValidator(p.canonical)]
        finite = False if p.finite else None  # None: pydantic's default
        field = Field(s.default, ge=p.ge, gt=p.gt, le=p.le, lt=p.lt, allow_inf_nan=finite, description=p.help)
        fields[s.name] = (kind, field)
    return create_model(
        "TrainConfigIn",
        __doc__="Hyper-parameters; bounded so that one request cannot occupy the machine for days.\n"
        "Strict: numbers must be JSON numbers (integers for the counts), never booleans or strings.",
        __config__=ConfigDict(
            extra="forbid",
            strict=True,
            json_schema_extra={
                "examples": [{"arch": "GRU", "hidden_size": 32, "num_layers": 1, "num_epochs": 10}]
            },
        ),
        **fields,
    )


if TYPE_CHECKING:

    class TrainConfigIn(BaseModel):
        """What the type checker sees: the fields are generated, one per API setting."""

        def __getattr__(self, name: str) -> Any: ...

else:
    TrainConfigIn = _train_config_model()


class TrainRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "exchange": "synthetic",
                    "symbol": "BTC-USD",
                    "config": {"arch": "CNN", "num_epochs": 3},
                    "activate": "if_better",
                }
            ]
        },
    )

    exchange: str = Field(
        "synthetic",
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="the market's exchange, as in GET /markets",
    )
    symbol: str = Field(
        "BTC-USD",
        min_length=1,
        max_length=NAME_MAX,
        pattern=NAME_PATTERN,
        description="the market's symbol, as in GET /markets",
    )
    start: Finite | None = Field(None, description="first tick time (unix s); default: the oldest stored")
    end: Finite | None = Field(None, description="stop before this time (unix s); default: up to the newest")
    config: TrainConfigIn = Field(
        default_factory=TrainConfigIn, description="hyper-parameters; each one left out has its default"
    )
    activate: Literal["never", "always", "if_better", "if_better_live"] = Field(
        "if_better",
        description="make the new model the active one: never, always, if its "
        "validation AUC beats the active model's on the same data, or (if_better_live) "
        "once it has scored live ticks in shadow and a paired test shows its live log loss lower",
    )
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="processes that train the one model together (data-parallel, Ray Train's DDP: "
        "each takes its share of every batch, and the model equals one process's with the same seed "
        "and batch_size, dropout aside); more than 1 needs the Ray backend (TICKCAST_JOB_BACKEND=ray) "
        "and at most config.batch_size",
        examples=[2],
    )

    @model_validator(mode="after")
    def _range(self) -> TrainRequest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        check_splits(self.config.train_split, self.config.val_split, prefix="config.")
        return self


class JobOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": _JOB_ID,
                    "status": "running",
                    "spec": {
                        "exchange": "synthetic",
                        "symbol": "BTC-USD",
                        "start": None,
                        "end": None,
                        "config": {"arch": "CNN", "num_epochs": 3},
                        "activate": "if_better",
                    },
                    "progress": {
                        "phase": "training",
                        "epoch": 2,
                        "num_epochs": 3,
                        "batch": 40,
                        "num_batches": 140,
                        "loss": 0.6712,
                        "elapsed_s": 12.4,
                        "val": {"auc": 0.61},
                    },
                    "result": None,
                    "error": None,
                    "created_at": 1795653000.5,
                    "started_at": 1795653001.0,
                    "finished_at": None,
                }
            ]
        }
    )

    id: str = Field(description="the job's id (12 hex digits), for GET and DELETE /jobs/{job_id}")
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"] = Field(
        description="queued, running, then succeeded, failed or cancelled; interrupted when the "
        "service stopped while it ran"
    )
    spec: dict[str, Any] = Field(description="what was asked: exchange, symbol, start, end, config, activate")
    progress: dict[str, Any] | None = Field(
        description="while it runs: phase, and during training "
        "epoch, num_epochs, batch, num_batches, loss, "
        "elapsed_s, val (validation metrics)"
    )
    result: dict[str, Any] | None = Field(
        description="when it succeeded: model_id, metrics, whether it "
        "was activated and why, the comparison with the "
        "active model"
    )
    error: str | None = Field(description="when it failed: why, and what to do")
    created_at: float = Field(description="when it was queued (unix s)")
    started_at: float | None = Field(description="when a worker took it (unix s)")
    finished_at: float | None = Field(description="when it ended, however it ended (unix s)")


class ModelOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": EXAMPLE_MODEL_ID,
                    "active": True,
                    "size_bytes": 48213,
                    "arch": "CNN",
                    "seq_len": 32,
                    "created_at": "2026-11-25T19:48:16Z",
                    "metrics": {"test": {"auc": 0.58, "brier": 0.22}, "val": {"auc": 0.57, "brier": 0.22}},
                    "meta": {"arch": "CNN", "seq_len": 32, "created_at": "2026-11-25T19:48:16Z"},
                    "loadable": True,
                    "unloadable_reason": None,
                }
            ]
        }
    )

    id: str = Field(description="the registry id: the file's name without .pt")
    active: bool = Field(description="whether /predict uses this model by default")
    size_bytes: int = Field(description="the checkpoint file's size")
    arch: str | None = Field(description="the network's architecture; null if the metadata lacks it")
    seq_len: int | None = Field(
        description="ticks per input window; /predict needs one more, and 16 more of history for a model "
        "with the tick-rule columns"
    )
    created_at: str | None = Field(description="when it was trained (ISO 8601, UTC)")
    metrics: dict[str, Any] | None = Field(
        description="scores per split (AUC, Brier, ...); null where undefined"
    )
    meta: dict[str, Any] = Field(
        description="the checkpoint's metadata (no weights); empty when the file is too damaged to read"
    )
    loadable: bool = Field(
        description="the file passed every check (metadata within bounds, weights "
        "of the described shapes): it can be activated and predicted with"
    )
    unloadable_reason: str | None = Field(
        description="why the model cannot be loaded and what to do; null when loadable"
    )
