"""A paired test of two forecasters on the same outcomes: the Diebold-Mariano test.

Live promotion compares a challenger with the active model on the ticks both
scored. Per-tick losses of neighbouring ticks are correlated (the same regime,
overlapping windows), so a plain t-test would be overconfident; Diebold and
Mariano's statistic divides the mean loss difference by a long-run (Newey-West,
Bartlett kernel) standard error instead. Several markets are independent
segments: each contributes its own long-run variance, and the pooled mean is
tested against their sum, so one market's autocorrelation never leaks into
another's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PairedTest:
    """The evidence that B's loss is lower than A's (`mean_diff` = mean of loss A - loss B)."""

    n: int
    mean_diff: float
    statistic: float  # mean_diff / its long-run standard error
    p_value: float  # one-sided: the chance of a statistic this large if B were no better

    def better(self, confidence: float) -> bool:
        """B is better at this confidence: a positive mean difference with p below 1 - confidence."""
        return self.mean_diff > 0 and self.p_value < 1.0 - confidence


def bartlett_lag(n: int) -> int:
    """Newey and West's rule of thumb for the truncation lag: 4 (n/100)^(2/9)."""
    return max(0, int(4 * (n / 100.0) ** (2.0 / 9.0)))


def long_run_variance(d: np.ndarray, lag: int | None = None) -> float:
    """The variance of sqrt(n) * mean(d) when d is autocorrelated (Bartlett-weighted autocovariances)."""
    d = np.asarray(d, dtype=np.float64)
    n = d.size
    if n < 2:
        return float("nan")
    q = bartlett_lag(n) if lag is None else min(lag, n - 1)
    e = d - d.mean()
    v = float(e @ e) / n
    for k in range(1, q + 1):
        v += 2.0 * (1.0 - k / (q + 1.0)) * float(e[k:] @ e[:-k]) / n
    return max(v, 0.0)


def diebold_mariano(loss_a: Sequence[np.ndarray], loss_b: Sequence[np.ndarray]) -> PairedTest:
    """Is B's expected loss lower than A's? Each pair of arrays is one segment (a market), in time order."""
    if len(loss_a) != len(loss_b):
        raise ValueError("loss_a and loss_b need the same number of segments")
    diffs = [
        np.asarray(a, np.float64) - np.asarray(b, np.float64) for a, b in zip(loss_a, loss_b, strict=True)
    ]
    diffs = [d for d in diffs if d.size]
    n = sum(d.size for d in diffs)
    if n < 2:
        return PairedTest(n, float("nan"), float("nan"), float("nan"))
    mean = float(sum(d.sum() for d in diffs)) / n
    # Var(mean) = sum over segments of n_m * LRV_m / n^2 (segments independent)
    var = sum(d.size * long_run_variance(d) for d in diffs if d.size >= 2) / n**2
    if not var > 0:
        stat = math.inf if mean > 0 else (-math.inf if mean < 0 else 0.0)
    else:
        stat = mean / math.sqrt(var)
    return PairedTest(n, mean, stat, 0.5 * math.erfc(stat / math.sqrt(2.0)))


def log_losses(y: np.ndarray, p: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Per-outcome log loss (the quantity live promotion compares)."""
    p = np.clip(np.asarray(p, np.float64), eps, 1.0 - eps)
    y = np.asarray(y, np.float64)
    out: np.ndarray = -(y * np.log(p) + (1.0 - y) * np.log1p(-p))
    return out
