"""Bodies of the live-evaluation answers: /markets/{exchange}/{symbol}/live, /models/{id}/live and
/predictions. Every field is described and each answer has an example: they are the OpenAPI
document's text."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

_WINDOW_EXAMPLE: dict[str, Any] = {
    "count": 1000,
    "auc": 0.631,
    "brier": 0.2071,
    "log_loss": 0.6012,
    "ece": 0.0112,
    "base_rate": 0.312,
    "base_brier": 0.2147,
    "ppv": 0.371,
    "npv": 0.801,
    "threshold": 0.27,
    "last_move_auc": 0.588,
}
_MODEL_EXAMPLE: dict[str, Any] = {
    "model_id": "ticknet-20261202-131440-c348c8",
    "role": "active",
    "arch": "TickNet",
    "calibrator_version": 1,
    "computed_at": 1796217216.75,
    "windows": {w: _WINDOW_EXAMPLE for w in ("last_1000", "last_10000", "last_hour", "last_day")},
    "validation": {"auc": 0.6382, "brier": 0.2057, "log_loss": 0.5975},
    "alerts": {"auc_floor": False, "below_last_move": False, "ece_bound": False},
    "reliability": [{"lo": 0.2, "hi": 0.3, "mean_p": 0.251, "observed": 0.262, "count": 412}],
}
_DECISION_EXAMPLE: dict[str, Any] = {
    "at": 1796217300.1,
    "active_id": "ticknet-20261201-090000-aaaaaa",
    "challenger_id": "ticknet-20261202-131440-c348c8",
    "decision": "promoted",
    "n": 5210,
    "mean_diff": 0.0041,
    "statistic": 2.87,
    "p_value": 0.0021,
    "confidence": 0.95,
    "min_outcomes": 5000,
    "reason": "live log loss lower than ticknet-20261201-090000-aaaaaa's by 0.00410 per tick over 5210 "
    "paired outcomes (p = 0.0021 < 0.05)",
}


class WindowOut(BaseModel):
    """One rolling window's figures on the logged probabilities and their outcomes (null: undefined,
    e.g. an AUC while every outcome so far is one class, or no outcome yet)."""

    count: int = Field(description="outcomes in the window")
    auc: float | None = Field(description="ROC AUC of the probabilities against the outcomes")
    brier: float | None = Field(description="mean squared error of the probabilities")
    log_loss: float | None = Field(description="mean log loss of the probabilities")
    ece: float | None = Field(description="expected calibration error, 10 equal-width bins")
    base_rate: float | None = Field(description="share of rises")
    base_brier: float | None = Field(description="the Brier score of always forecasting the base rate")
    ppv: float | None = Field(
        description="share of rises among the ticks called 'rise' at the model's threshold"
    )
    npv: float | None = Field(description="share of non-rises among the ticks called 'no rise'")
    threshold: float | None = Field(description="the model's decision threshold")
    last_move_auc: float | None = Field(description="the last-move rule's AUC on the same outcomes")


class WindowsOut(BaseModel):
    last_1000: WindowOut = Field(description="the newest 1,000 outcomes")
    last_10000: WindowOut = Field(description="the newest 10,000 outcomes")
    last_hour: WindowOut = Field(
        description="outcomes of the market's last hour (its own clock: back from the newest)"
    )
    last_day: WindowOut = Field(description="outcomes of the market's last day (its own clock)")


class ValidationOut(BaseModel):
    """The model's figures on its validation split at training time, to hold the live ones against."""

    auc: float | None = Field(description="validation AUC (null: not recorded)")
    brier: float | None = Field(description="validation Brier score")
    log_loss: float | None = Field(description="validation log loss")


class AlertsOut(BaseModel):
    """Conditions on the newest 1,000 outcomes (quiet below 200 of them)."""

    auc_floor: bool = Field(description="live AUC under TICKCAST_LIVE_AUC_FLOOR")
    below_last_move: bool = Field(description="live AUC under the last-move rule's on the same outcomes")
    ece_bound: bool = Field(description="live ECE over TICKCAST_LIVE_ECE_MAX")


class BinOut(BaseModel):
    lo: float = Field(description="the bin's lowest probability (inclusive)")
    hi: float = Field(description="the bin's highest probability (exclusive; 1 is in the last bin)")
    mean_p: float | None = Field(description="mean forecast in the bin (null: empty bin)")
    observed: float | None = Field(description="share of rises in the bin (null: empty bin)")
    count: int = Field(description="outcomes in the bin")


class LiveModelOut(BaseModel):
    model_id: str = Field(description="the model's registry id")
    role: Literal["active", "shadow", "retired"] = Field(
        description="active: serves /predict; shadow: scored beside it; retired: neither any more"
    )
    arch: str | None = Field(description="its architecture (null: the file is gone)")
    calibrator_version: int = Field(description="the calibrator it serves with now (0: its checkpoint's own)")
    computed_at: float | None = Field(description="when the figures were computed (unix s); null: not yet")
    windows: WindowsOut = Field(description="the rolling windows' figures")
    validation: ValidationOut = Field(description="its validation figures from training")
    alerts: AlertsOut = Field(description="the live alert conditions")
    reliability: list[BinOut] = Field(description="reliability of the newest 1,000 outcomes, 10 bins")


class DecisionOut(BaseModel):
    """A promotion decision and its evidence: a one-sided Diebold-Mariano test on the per-tick
    log-loss differences (active minus challenger) over the newest paired outcomes."""

    at: float = Field(description="when it was decided (unix s)")
    active_id: str = Field(description="the model that was active")
    challenger_id: str = Field(description="the shadow tested against it")
    decision: Literal["promoted", "refused"] = Field(description="promoted: the challenger was activated")
    n: int = Field(description="paired outcomes tested")
    mean_diff: float | None = Field(
        description="mean log-loss difference per tick (> 0: the challenger is better)"
    )
    statistic: float | None = Field(description="the Diebold-Mariano statistic")
    p_value: float | None = Field(description="one-sided p-value")
    confidence: float = Field(description="TICKCAST_PROMOTE_CONFIDENCE at the time")
    min_outcomes: int = Field(description="TICKCAST_PROMOTE_MIN_OUTCOMES at the time")
    reason: str = Field(description="the decision in words")


class MarketLiveOut(BaseModel):
    """The market's live leaderboard."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "exchange": "synthetic",
                    "symbol": "BTC-USD",
                    "scored_through": 1796217215.0,
                    "models": [_MODEL_EXAMPLE],
                    "decisions": [_DECISION_EXAMPLE],
                }
            ]
        }
    )

    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    scored_through: float | None = Field(description="time of the last tick live scoring has seen")
    models: list[LiveModelOut] = Field(description="the active model, then its shadows by recent log loss")
    decisions: list[DecisionOut] = Field(
        description="the newest promotion decisions (the active model serves every market, so a "
        "decision weighs the evidence of all of them)"
    )


class MarketModelLiveOut(LiveModelOut):
    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")


class CalibratorOut(BaseModel):
    """A calibrator refitted on live outcomes; `kept` ones were served (from `version` on)."""

    version: int = Field(description="its version number (0 is the checkpoint's own)")
    kept: bool = Field(description="it lowered the log loss on outcomes it did not see, so it was served")
    fitted_at: float = Field(description="when it was fitted (unix s)")
    kind: str = Field(description="platt or isotonic")
    n_fit: int = Field(description="outcomes it was fitted on")
    n_holdout: int = Field(description="the newest outcomes it was judged on")
    log_loss_before: float = Field(description="log loss served on the held-out newest outcomes")
    log_loss_after: float = Field(description="this calibrator's log loss on them")
    replaces: int = Field(description="the version that was serving when it was fitted")


class ModelLiveOut(BaseModel):
    """One model's live record."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model_id": _MODEL_EXAMPLE["model_id"],
                    "markets": [{"exchange": "synthetic", "symbol": "BTC-USD", **_MODEL_EXAMPLE}],
                    "history": [_DECISION_EXAMPLE],
                    "calibrators": [
                        {
                            "version": 1,
                            "kept": True,
                            "fitted_at": 1796217000.0,
                            "kind": "platt",
                            "n_fit": 15000,
                            "n_holdout": 5000,
                            "log_loss_before": 0.6101,
                            "log_loss_after": 0.6032,
                            "replaces": 0,
                        }
                    ],
                }
            ]
        }
    )

    model_id: str = Field(description="the model's registry id")
    markets: list[MarketModelLiveOut] = Field(description="its figures on each market it scored")
    history: list[DecisionOut] = Field(description="promotion decisions naming this model, newest first")
    calibrators: list[CalibratorOut] = Field(
        description="calibrators refitted for it on live outcomes, newest first"
    )


class PredictionLogOut(BaseModel):
    exchange: str = Field(description="the market's exchange")
    symbol: str = Field(description="the market's symbol")
    model_id: str = Field(description="the model that scored it")
    role: Literal["active", "shadow"] = Field(description="whether that model was serving then, or in shadow")
    calibrator_version: int = Field(description="the calibrator it was served with (0: the checkpoint's own)")
    time: float = Field(description="time of the tick whose window ended the prediction")
    seq: int = Field(
        description="the tick's arrival number in its market: (time, seq) is its place in the store"
    )
    probability: float = Field(description="the rise probability logged")
    outcome: int | None = Field(
        description="1: the price rose at the tick `horizon` later; null: not stored yet"
    )
    scored_at: float = Field(description="when it was scored (unix s)")
    resolved_at: float | None = Field(description="when its outcome was recorded (unix s)")
    replayed: float | None = Field(None, description="with replay=true: the probability recomputed now")


class PredictionsOut(BaseModel):
    """Logged live predictions, oldest first."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "predictions": [
                        {
                            "exchange": "synthetic",
                            "symbol": "BTC-USD",
                            "model_id": "ticknet-20261202-131440-c348c8",
                            "role": "active",
                            "calibrator_version": 0,
                            "time": 1796217200.0,
                            "seq": 60412,
                            "probability": 0.2874,
                            "outcome": 0,
                            "scored_at": 1796217200.4,
                            "resolved_at": 1796217202.9,
                        }
                    ],
                    "truncated": False,
                }
            ]
        }
    )

    predictions: list[PredictionLogOut] = Field(description="the rows, oldest first")
    truncated: bool = Field(
        description="more predictions matched than `limit`: ask again with `start` at the last row's "
        "time (the rows at that time come again: skip those up to the last (time, seq, model_id) seen)"
    )
