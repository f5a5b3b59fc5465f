"""Request and response bodies: the HTTP contract, validated at the edge.

Bad input is stopped here with a 422 that names the field and the index, so
nothing malformed reaches the model, the store or a job.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.market.ticks import TickArrays

# Strict: a JSON number only (an integer is a fine float); `true` and `"6000"` are not numbers.
Finite = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class TickIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    time: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, description="unix seconds")]
    price: Annotated[float, Field(strict=True, allow_inf_nan=False, gt=0)]
    amount: Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0)]


def _check_order(ticks: list[TickIn], where: str) -> None:
    for i in range(1, len(ticks)):
        if ticks[i].time < ticks[i - 1].time:
            raise ValueError(f"{where}[{i}].time ({ticks[i].time}) is before {where}[{i - 1}].time "
                             f"({ticks[i - 1].time}); send ticks oldest first")


def to_arrays(ticks: list[TickIn]) -> TickArrays:
    rows = np.array([(t.time, t.price, t.amount) for t in ticks], dtype=np.float64).reshape(-1, 3)
    return TickArrays(rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy())


_EXAMPLE_TICKS = [{"time": 1534131395 + i, "price": 6356.7 + (i % 3) * 0.5, "amount": 0.1}
                  for i in range(33)]


class PredictRequest(BaseModel):
    """Either `ticks` (one prediction, as of the last tick) or `windows` (several at once)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"ticks": _EXAMPLE_TICKS}, {"ticks": _EXAMPLE_TICKS, "model_id": "cnn-20261125-194816-1cd8d3"}]})

    ticks: list[TickIn] | None = Field(None, description="recent ticks, oldest first; at least the "
                                                          "model's sequence length + 1")
    windows: list[list[TickIn]] | None = Field(None, max_length=1024,
                                               description="several tick lists, one prediction each")
    model_id: str | None = Field(None, max_length=128, description="a registry id; default: the active model")

    @model_validator(mode="after")
    def _one_of(self) -> PredictRequest:
        if (self.ticks is None) == (self.windows is None):
            raise ValueError("give exactly one of 'ticks' or 'windows'")
        if self.ticks is not None:
            _check_order(self.ticks, "ticks")
        for k, w in enumerate(self.windows or []):
            _check_order(w, f"windows[{k}]")
        return self


class PredictionOut(BaseModel):
    probability: float = Field(description="probability that the next tick's price is strictly higher")
    decision: bool = Field(description="probability >= the model's threshold (its training base rate)")
    threshold: float
    model_id: str
    as_of: float = Field(description="time of the last tick the prediction uses")


class PredictBatchOut(BaseModel):
    predictions: list[PredictionOut]


class TrainConfigIn(BaseModel):
    """Hyper-parameters; bounded so that one request cannot occupy the machine for days.
    Strict: numbers must be JSON numbers (integers for the counts), never booleans or strings."""

    model_config = ConfigDict(extra="forbid", strict=True)

    arch: Literal["CNN", "LSTM", "RNNLinear", "GRU", "PureRNN"] = "CNN"
    seq_len: int = Field(32, ge=2, le=512)
    horizon: int = Field(1, ge=1, le=100)
    hidden_size: int = Field(32, ge=1, le=1024)
    num_layers: int = Field(2, ge=1, le=16)
    dropout: float = Field(0.3, ge=0, lt=1)
    batch_size: int = Field(256, ge=2, le=65536)
    num_epochs: int = Field(8, ge=1, le=1000)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(2e-3, gt=0, le=10, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    step_size: int = Field(3, ge=1, le=1000)
    gamma: float = Field(0.5, gt=0, le=1)
    clip: float = Field(1.0, ge=0, le=1000, allow_inf_nan=False)
    patience: int = Field(3, ge=0, le=1000)
    train_split: float = Field(0.6, gt=0, lt=1)
    val_split: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=2**31 - 1)


class TrainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"exchange": "synthetic", "symbol": "BTC-USD", "config": {"arch": "CNN", "num_epochs": 3},
         "activate": "if_better"}]})

    exchange: str = Field("synthetic", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    symbol: str = Field("BTC-USD", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    start: Finite | None = Field(None, description="first tick time (unix s)")
    end: Finite | None = Field(None, description="stop before this time (unix s)")
    config: TrainConfigIn = Field(default_factory=TrainConfigIn)
    activate: Literal["never", "always", "if_better"] = "if_better"

    @model_validator(mode="after")
    def _range(self) -> TrainRequest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError("end must be after start")
        if self.config.train_split + self.config.val_split > 1:
            raise ValueError("config.train_split + config.val_split must be <= 1")
        return self


class JobOut(BaseModel):
    id: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
    spec: dict[str, Any]
    progress: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None


class ModelOut(BaseModel):
    id: str
    active: bool
    size_bytes: int
    arch: str | None
    seq_len: int | None
    created_at: str | None
    metrics: dict[str, Any] | None
    meta: dict[str, Any] = Field(description="the checkpoint's metadata (no weights); empty when the "
                                             "file is too damaged to read")
    loadable: bool = Field(description="the file passed every check (metadata within bounds, weights "
                                       "of the described shapes): it can be activated and predicted with")
    unloadable_reason: str | None = Field(description="why the model cannot be loaded and what to do; "
                                                      "null when loadable")


class Message(BaseModel):
    detail: str
