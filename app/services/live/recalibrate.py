"""Refitting the active model's calibrator on its recent live outcomes, weights untouched.

The newest outcomes of each market are split in time: the calibrator is fitted
on the older three quarters and judged on the newest quarter it did not see,
against what was actually served there. It is kept (and served from then on,
as the model's next calibrator version) only when its log loss there is lower;
either way the attempt is recorded with its figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from app.ml import calibration, metrics
from app.ml.checkpoint import Model
from app.services.live.log import PredictionLog

RECENT = 20_000  # newest outcomes per market a refit reads
HOLDOUT = 0.25  # the newest share of them it is judged on
MIN_FIT = 1_000  # fewer outcomes to fit on: no attempt


@dataclass(frozen=True)
class Refit:
    version: int
    kept: bool
    calibrator: calibration.Calibrator
    report: dict[str, Any]


def refit(log: PredictionLog, model: Model, markets: list[tuple[str, str]]) -> Refit | None:
    """Fit, judge and record a new calibrator for `model`; None when there are too few outcomes."""
    fit_z, fit_y, hold_z, hold_y, hold_p = [], [], [], [], []
    for exchange, symbol in markets:
        o = log.outcomes(exchange, symbol, model.id, last=RECENT)
        cut = len(o) - int(round(len(o) * HOLDOUT))
        fit_z.append(o.logit[:cut])
        fit_y.append(o.outcome[:cut])
        hold_z.append(o.logit[cut:])
        hold_y.append(o.outcome[cut:])
        hold_p.append(o.probability[cut:])
    z, y = np.concatenate(fit_z), np.concatenate(fit_y)
    hz, hy, hp = np.concatenate(hold_z), np.concatenate(hold_y), np.concatenate(hold_p)
    if len(z) < MIN_FIT or len(hz) == 0 or y.min() == y.max():
        return None
    new = calibration.fit(model.calibrator.kind, z, y)
    before, after = metrics.log_loss(hy, hp), metrics.log_loss(hy, new.apply(hz))
    kept = after < before
    report = {
        "kind": new.kind,
        "n_fit": int(len(z)),
        "n_holdout": int(len(hz)),
        "log_loss_before": before,
        "log_loss_after": after,
        "replaces": model.calibrator_version,
    }
    version = log.add_calibrator(model.id, new.to_dict(), report, kept)
    return Refit(version, kept, new, report)
