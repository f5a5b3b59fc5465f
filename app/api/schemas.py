"""Request and response bodies: the HTTP contract, validated at the edge.

Bad input is stopped here with a 422 that names the field and the index, so
nothing malformed reaches the model, the store or a job. Every field carries a
description and every model an example: they are the OpenAPI document's text,
and the contract test (tests/api/test_contract.py) holds the service to them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.market.ticks import TickArrays

# Strict: a JSON number only (an integer is a fine float); `true` and `"6000"` are not numbers.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]
NAME_PATTERN = r"^[A-Za-z0-9_.-]+$"  # an exchange or a symbol: what the store and the URLs can carry

_MODEL_ID = "cnn-20261125-194816-1cd8d3"
_JOB_ID = "3f9c2a7d41b0"


class ErrorOut(BaseModel):
    """Every error but a 422: what went wrong and what to do about it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"detail": f"no model {_MODEL_ID!r}; GET /models lists the models"}]}
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


_EXAMPLE_TICKS = [{"time": 1534131395 + i, "price": 6356.7 + (i % 3) * 0.5, "amount": 0.1} for i in range(33)]
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
            "examples": [{"ticks": _EXAMPLE_TICKS}, {"ticks": _EXAMPLE_TICKS, "model_id": _MODEL_ID}]
        },
    )

    ticks: list[TickIn] | None = Field(
        None, description="recent ticks, oldest first; at least the model's sequence length + 1"
    )
    windows: list[list[TickIn]] | None = Field(
        None, max_length=1024, description="several tick lists, one prediction each"
    )
    model_id: str | None = Field(None, max_length=128, description="a registry id; default: the active model")
    exchange: str | None = Field(None, max_length=64, description=_IGNORED)
    symbol: str | None = Field(None, max_length=64, description=_IGNORED)
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


_PREDICTION = {
    "probability": 0.29,
    "decision": False,
    "threshold": 0.34,
    "model_id": _MODEL_ID,
    "as_of": 1534131427.0,
}


class PredictionOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [_PREDICTION]})

    probability: float = Field(description="probability that the next tick's price is strictly higher")
    decision: bool = Field(description="probability >= the model's threshold (its training base rate)")
    threshold: float = Field(
        description="the model's decision threshold: the share of rises in its training data"
    )
    model_id: str = Field(description="the model that answered")
    as_of: float = Field(description="time of the last tick the prediction uses")


class PredictBatchOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"predictions": [_PREDICTION]}]})

    predictions: list[PredictionOut] = Field(description="one prediction per window, in the order sent")


class TrainConfigIn(BaseModel):
    """Hyper-parameters; bounded so that one request cannot occupy the machine for days.
    Strict: numbers must be JSON numbers (integers for the counts), never booleans or strings."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "examples": [{"arch": "GRU", "hidden_size": 32, "num_layers": 1, "num_epochs": 10}]
        },
    )

    arch: Literal["CNN", "LSTM", "RNNLinear", "GRU", "PureRNN"] = Field(
        "CNN", description="the network: a 1-D CNN, an LSTM (RNNLinear is the same), a GRU or a plain RNN"
    )
    seq_len: int = Field(
        32, ge=2, le=512, description="ticks in one input window; /predict then needs seq_len + 1 ticks"
    )
    horizon: int = Field(1, ge=1, le=100, description="predict a rise this many ticks ahead")
    hidden_size: int = Field(
        32, ge=1, le=1024, description="width of each hidden layer (channels for the CNN)"
    )
    num_layers: int = Field(2, ge=1, le=16, description="hidden layers")
    dropout: float = Field(0.3, ge=0, lt=1, description="dropout rate between layers, in [0, 1)")
    batch_size: int = Field(256, ge=2, le=65536, description="training windows per optimiser step")
    num_epochs: int = Field(
        8, ge=1, le=1000, description="passes over the training windows (fewer if early stopping ends it)"
    )
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", description="the optimiser")
    lr: float = Field(2e-3, gt=0, le=10, allow_inf_nan=False, description="learning rate")
    weight_decay: float = Field(
        0.0, ge=0, le=1, allow_inf_nan=False, description="L2 penalty (decoupled for adamw)"
    )
    step_size: int = Field(3, ge=1, le=1000, description="epochs between learning-rate cuts")
    gamma: float = Field(0.5, gt=0, le=1, description="factor of each learning-rate cut")
    clip: float = Field(
        1.0, ge=0, le=1000, allow_inf_nan=False, description="gradient-norm clipping; 0 turns it off"
    )
    patience: int = Field(
        3,
        ge=0,
        le=1000,
        description="stop after this many epochs without a validation AUC gain; 0 never stops early",
    )
    train_split: float = Field(0.6, gt=0, lt=1, description="share of the windows (the oldest) to train on")
    val_split: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="share of the windows after those to validate on; the rest is the test split",
    )
    seed: int = Field(
        0, ge=0, le=2**31 - 1, description="random seed: the same data and settings give the same model"
    )


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
        max_length=64,
        pattern=NAME_PATTERN,
        description="the market's exchange, as in GET /markets",
    )
    symbol: str = Field(
        "BTC-USD",
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        description="the market's symbol, as in GET /markets",
    )
    start: Finite | None = Field(None, description="first tick time (unix s); default: the oldest stored")
    end: Finite | None = Field(None, description="stop before this time (unix s); default: up to the newest")
    config: TrainConfigIn = Field(
        default_factory=TrainConfigIn, description="hyper-parameters; each one left out has its default"
    )
    activate: Literal["never", "always", "if_better"] = Field(
        "if_better",
        description="make the new model the active one: never, always, or if its "
        "validation AUC beats the active model's on the same data",
    )

    @model_validator(mode="after")
    def _range(self) -> TrainRequest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.config.train_split + self.config.val_split > 1:
            raise ValueError("config.train_split + config.val_split must be <= 1")
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
                    "id": _MODEL_ID,
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
    seq_len: int | None = Field(description="ticks per input window; /predict needs one more")
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


class TickOut(BaseModel):
    time: float = Field(description="when the trade happened, unix seconds")
    price: float = Field(description="the trade's price")
    amount: float = Field(description="the traded quantity")


class TicksOut(BaseModel):
    """Stored ticks, oldest first; a valid POST /predict body as it is."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "synthetic",
                    "symbol": "BTC-USD",
                    "count": 2,
                    "ticks": [
                        {"time": 1795653448.0, "price": 6642.56, "amount": 0.001},
                        {"time": 1795653452.7, "price": 6642.9, "amount": 0.25},
                    ],
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    count: int = Field(description="how many ticks follow")
    ticks: list[TickOut] = Field(description="the ticks, oldest first")


class MarketOut(BaseModel):
    """A market's ingestion status. Stored markets that are not configured (imported ones) are
    listed too, `scheduled: false`, with their stored ticks and null pull fields."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "binance",
                    "symbol": "BTC-USD",
                    "scheduled": True,
                    "ingesting": True,
                    "last_pull": 1795653450.2,
                    "last_success": 1795653450.2,
                    "last_new_ticks": 12,
                    "last_error": None,
                    "pulls": 360,
                    "failures": 1,
                    "consecutive_failures": 0,
                    "worker_restarts": 0,
                    "ticks_stored": 183004,
                    "last_tick_time": 1795653448.0,
                    "lag_s": 2.9,
                    "cursor": "3401187",
                    "next_run": 1795653460.2,
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    scheduled: bool = Field(
        description="configured in TICKCAST_MARKETS (pulled on the schedule when "
        "ingesting); false for a market that only has stored ticks"
    )
    ingesting: bool = Field(
        description="whether this market is pulled on the schedule now (TICKCAST_INGEST and scheduled)"
    )
    last_pull: float | None = Field(
        description="when the last pull finished (unix s); null before the "
        "first and for markets that are not scheduled"
    )
    last_success: float | None = Field(
        None, description="when the last pull that worked finished (unix s): alert when it is old"
    )
    last_new_ticks: int | None = Field(description="ticks the last pull stored")
    last_error: str | None = Field(description="why the last pull failed; null when it worked")
    pulls: int | None = Field(description="pulls that worked since the service started")
    failures: int | None = Field(description="pulls that failed since the service started")
    consecutive_failures: int | None = Field(
        description="failed pulls since the last that worked: alert on this"
    )
    worker_restarts: int = Field(description="deaths of the ingest worker answered with a new one")
    ticks_stored: int = Field(description="ticks of this market in the store")
    last_tick_time: float | None = Field(description="time of the newest stored tick (unix s)")
    lag_s: float | None = Field(description="seconds from the newest stored tick to now")
    cursor: str | None = Field(description="where the next pull resumes (the source's own position)")
    next_run: float | None = Field(description="when the next scheduled pull starts (unix s)")


class MarketRef(BaseModel):
    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    scheduled: bool = Field(
        description="configured in TICKCAST_MARKETS; false for a market that only has stored ticks (imported)"
    )


class InfoOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "version": "0.1.0",
                    "auth_required": False,
                    "device": "cpu",
                    "markets": [
                        {"exchange": "synthetic", "symbol": "BTC-USD", "scheduled": True},
                        {"exchange": "kraken", "symbol": "ETH-USD", "scheduled": False},
                    ],
                }
            ]
        }
    )

    version: str = Field(description="the service's version")
    auth_required: bool = Field(description="whether writes need the X-API-Key header")
    markets: list[MarketRef] = Field(description="the configured markets, then the other stored ones")
    device: str = Field(description="where the models run: cpu, cuda:N or mps")


class HealthOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})

    status: Literal["ok"] = Field(description="always ok: the process answers")


class ReadyOut(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ready", "model_id": _MODEL_ID}]})

    status: Literal["ready"] = Field(description="always ready on a 200")
    model_id: str = Field(description="the active model, which /predict uses")


class NotReadyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "not ready",
                    "reason": "no model is loaded; train one (POST /train)",
                    "detail": "no model is loaded; train one (POST /train)",
                }
            ]
        }
    )

    status: Literal["not ready"] = Field(description="always `not ready` on a 503")
    reason: str = Field(description="why, and what to do")
    detail: str = Field(description="the same as reason, as every other error names it")


class PullOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "binance",
                    "symbol": "BTC-USD",
                    "new_ticks": 120,
                    "pages": 1,
                    "cursor": "3401187",
                    "seconds": 0.42,
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    new_ticks: int = Field(description="ticks stored by this pull (re-pulled ones count once)")
    pages: int = Field(description="pages fetched from the exchange")
    cursor: str | None = Field(description="where the next pull resumes")
    seconds: float = Field(description="how long the pull took")


class ImportOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"exchange": "kraken", "symbol": "ETH-USD", "rows": 4, "new_ticks": 4}]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    rows: int = Field(description="data rows in the CSV")
    new_ticks: int = Field(description="rows stored; `rows - new_ticks` were stored already")
