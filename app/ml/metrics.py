"""Classification metrics for rise/no-rise forecasts, in numpy.

PPV and NPV are the ancestor's headline numbers; they mean little without the
base rate beside them, and nothing about the probabilities themselves, so
ROC AUC (ranking), Brier and log loss (calibration) come with them, each with
the score a constant base-rate forecast would get.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def _arrays(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    return y, p


def roc_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Mann-Whitney AUC with tied scores counted half; NaN when only one class is present."""
    y, p = _arrays(y, p)
    pos = y > 0.5
    n_pos = int(pos.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    # average ranks over runs of tied scores
    boundaries = np.flatnonzero(np.diff(sp)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [sp.size]))
    avg_rank = (starts + ends + 1) / 2.0  # 1-based average rank of each run
    ranks = np.empty(sp.size, dtype=np.float64)
    ranks[order] = np.repeat(avg_rank, ends - starts)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _arrays(y, p)
    return float(np.mean((p - y) ** 2))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    y, p = _arrays(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def ppv_npv(y: np.ndarray, p: np.ndarray, threshold: float) -> tuple[float, float]:
    """Precision of the 'rise' calls and of the 'no rise' calls; NaN when a side is never called."""
    y, p = _arrays(y, p)
    call = p >= threshold
    pos = y > 0.5
    tp, fp = int((call & pos).sum()), int((call & ~pos).sum())
    tn, fn = int((~call & ~pos).sum()), int((~call & pos).sum())
    ppv = tp / (tp + fp) if tp + fp else float("nan")
    npv = tn / (tn + fn) if tn + fn else float("nan")
    return ppv, npv


def report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """All metrics in one plain dict (it goes into checkpoints and JSON as is)."""
    y, p = _arrays(y, p)
    if y.size == 0:
        raise ValueError("no samples to score")
    base = float(y.mean())
    const = np.full_like(y, base)
    ppv, npv = ppv_npv(y, p, threshold)
    return {
        "n": float(y.size),
        "base_rate": base,
        "auc": roc_auc(y, p),
        "brier": brier(y, p),
        "log_loss": log_loss(y, p),
        "base_brier": brier(y, const),
        "base_log_loss": log_loss(y, const),
        "accuracy": float(np.mean((p >= threshold) == (y > 0.5))),
        "ppv": ppv,
        "npv": npv,
        "threshold": float(threshold),
    }


# Which way is better for each metric that can drive early stopping.
HIGHER_IS_BETTER = {
    "auc": True,
    "accuracy": True,
    "ppv": True,
    "npv": True,
    "brier": False,
    "log_loss": False,
    "loss": False,
}
