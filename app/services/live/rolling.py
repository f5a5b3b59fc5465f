"""Rolling live metrics of one (model, market): the last 1,000 and 10,000 outcomes, the last hour and day.

"The last hour" is measured in the market's own time, back from its newest
resolved outcome, so a market replayed from history is judged on the same
footing as one that is live. Every figure is the offline metric of
`app.ml.metrics` on the logged probabilities and outcomes; undefined ones (an
AUC over one class, PPV when nothing is called) are None, as JSON wants.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml import metrics
from app.services.live.log import Outcomes, PredictionLog

COUNT_WINDOWS = {"last_1000": 1_000, "last_10000": 10_000}
TIME_WINDOWS = {"last_hour": 3_600.0, "last_day": 86_400.0}
MAX_TIME_WINDOW_ROWS = 500_000  # the most outcomes a time window reads (a day of a very busy market)
RELIABILITY_OF = 1_000  # the reliability diagram: the newest this many outcomes
ALERT_MIN_COUNT = 200  # alerts wait for this many outcomes in the last-1,000 window
WINDOW_NAMES = (*COUNT_WINDOWS, *TIME_WINDOWS)


@dataclass(frozen=True)
class Limits:
    """Where the live alert gauges trip."""

    auc_floor: float
    ece_max: float


def _num(v: float) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def window_metrics(o: Outcomes, threshold: float) -> dict[str, Any]:
    """One window's figures; counts only when there are no outcomes."""
    if len(o) == 0:
        return {"count": 0} | dict.fromkeys(
            (
                "auc",
                "brier",
                "log_loss",
                "ece",
                "base_rate",
                "base_brier",
                "ppv",
                "npv",
                "threshold",
                "last_move_auc",
            )
        )
    r = metrics.report(o.outcome, o.probability, threshold)
    return {
        "count": len(o),
        "auc": _num(r["auc"]),
        "brier": _num(r["brier"]),
        "log_loss": _num(r["log_loss"]),
        "ece": _num(r["ece"]),
        "base_rate": _num(r["base_rate"]),
        "base_brier": _num(r["base_brier"]),
        "ppv": _num(r["ppv"]),
        "npv": _num(r["npv"]),
        "threshold": float(threshold),
        "last_move_auc": _num(metrics.roc_auc(o.outcome, o.last_move)),
    }


def alerts(last: dict[str, Any], limits: Limits) -> dict[str, bool]:
    """The alert conditions on the newest 1,000 outcomes (quiet until there are enough)."""
    if last["count"] < ALERT_MIN_COUNT:
        return {"auc_floor": False, "below_last_move": False, "ece_bound": False}
    auc, lm, ece = last["auc"], last["last_move_auc"], last["ece"]
    return {
        "auc_floor": auc is not None and auc < limits.auc_floor,
        "below_last_move": auc is not None and lm is not None and auc < lm,
        "ece_bound": ece is not None and ece > limits.ece_max,
    }


def compute(
    log: PredictionLog, exchange: str, symbol: str, model_id: str, threshold: float, limits: Limits
) -> dict[str, Any]:
    """Every window's figures, the alerts and the reliability table of one series, as stored."""
    recent = log.outcomes(exchange, symbol, model_id, last=max(COUNT_WINDOWS.values()))
    windows = {name: window_metrics(recent.tail(n), threshold) for name, n in COUNT_WINDOWS.items()}
    newest = float(recent.time[-1]) if len(recent) else None
    for name, span in TIME_WINDOWS.items():
        o = (
            log.outcomes(exchange, symbol, model_id, last=MAX_TIME_WINDOW_ROWS, since=newest - span)
            if newest is not None
            else recent
        )
        windows[name] = window_metrics(o, threshold)
    rel = recent.tail(RELIABILITY_OF)
    bins = metrics.reliability(rel.outcome, rel.probability) if len(rel) else []
    return {
        "windows": windows,
        "alerts": alerts(windows["last_1000"], limits),
        "reliability": [
            {"lo": b.lo, "hi": b.hi, "mean_p": _num(b.mean_p), "observed": _num(b.observed), "count": b.count}
            for b in bins
        ],
        "newest_time": newest,
        "outcomes": int(np.count_nonzero(~np.isnan(recent.outcome))),
    }
