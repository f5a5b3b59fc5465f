"""A gradient-boosted tree on flattened tick windows: the standing baseline every net must beat.

A few lines of scikit-learn on plain per-tick columns ranks next-tick rises
better than a naive net (issue 13), so a model is judged beside it. The
service never needs it: scikit-learn is an optional extra (`tickcast[eval]`)
imported only inside the functions that fit, and `TreeUnavailable` says how to
install it where it is missing.

Indexing follows `features.py`: row r of `tree_rows` describes tick r + 1, so a
window of L rows ending at tick i is rows i-L .. i-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np

TREE_PARAMS: dict[str, Any] = {
    "max_iter": 200,
    "learning_rate": 0.05,
    "early_stopping": False,
    "random_state": 0,
}
TREE_COLUMNS: tuple[str, ...] = ("log_return", "log_amount", "flat", "log_gap")

_INSTALL_HINT = (
    "scikit-learn is not installed: pip install 'tickcast[eval]' (scripts/dev.sh setup installs it)"
)


class TreeUnavailable(RuntimeError):
    """scikit-learn is missing; the message says how to install it."""

    def __init__(self) -> None:
        super().__init__(_INSTALL_HINT)


def available() -> bool:
    """Whether the tree can be fitted here (scikit-learn importable)."""
    try:
        import sklearn  # type: ignore[import-untyped]  # noqa: F401
    except ImportError:
        return False
    return True


def tree_rows(time: np.ndarray, price: np.ndarray, amount: np.ndarray) -> np.ndarray:
    """(n - 1, 4) float64 rows in TREE_COLUMNS order, row r for tick r + 1 (none below 2 ticks).

    Unstandardised on purpose: a tree is invariant to monotone rescaling, and
    leaving the scale alone keeps the baseline free of any fitted state.
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    p = np.asarray(price, dtype=np.float64).ravel()
    a = np.asarray(amount, dtype=np.float64).ravel()
    if not t.size == p.size == a.size:
        raise ValueError(f"time, price and amount differ in length: {t.size}, {p.size}, {a.size}")
    if p.size < 2:
        return np.empty((0, len(TREE_COLUMNS)), dtype=np.float64)
    out = np.empty((p.size - 1, len(TREE_COLUMNS)), dtype=np.float64)
    out[:, 0] = np.diff(np.log(p))
    out[:, 1] = np.log1p(a[1:])
    out[:, 2] = p[1:] == p[:-1]
    out[:, 3] = np.log1p(np.maximum(np.diff(t), 0.0))
    return out


def _matrix(x: np.ndarray, name: str) -> np.ndarray:
    """(N, L, C) windows or an (N, L*C) matrix -> (N, L*C) float64, a plain reshape."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim not in (2, 3):
        raise ValueError(f"{name} must be (N, L, C) windows or an (N, L*C) matrix, got shape {arr.shape}")
    return arr.reshape(arr.shape[0], int(np.prod(arr.shape[1:])))  # -1 fails on zero windows


def _labels(y: np.ndarray, n: int) -> np.ndarray:
    labels = np.asarray(y, dtype=np.float64).ravel()
    if labels.size != n:
        raise ValueError(f"{n} training windows but {labels.size} targets")
    if not np.isin(labels, (0.0, 1.0)).all():
        raise ValueError("targets must be 0 (no rise) or 1 (rise)")
    if np.unique(labels).size < 2:
        raise ValueError("the training windows hold one class only; the tree cannot learn a rise probability")
    return labels.astype(np.int64)


@overload
def fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, *, seed: int = 0
) -> np.ndarray: ...


@overload
def fit_predict(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: Sequence[np.ndarray], *, seed: int = 0
) -> list[np.ndarray]: ...


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_eval: np.ndarray | Sequence[np.ndarray],
    *,
    seed: int = 0,
) -> np.ndarray | list[np.ndarray]:
    """Fit once on the training windows; the float64 rise probability of each eval window.

    One array in, one array out; a list in, a list out (one fit serves every
    split scored, so they are judged by the same tree). Deterministic for a seed.
    """
    try:
        from sklearn.ensemble import HistGradientBoostingClassifier  # type: ignore[import-untyped]
    except ImportError as err:
        raise TreeUnavailable() from err
    x = _matrix(x_train, "x_train")
    y = _labels(y_train, x.shape[0])
    single = isinstance(x_eval, np.ndarray)
    parts: Sequence[np.ndarray] = [x_eval] if isinstance(x_eval, np.ndarray) else x_eval
    evals = [_matrix(part, "x_eval") for part in parts]
    for ev in evals:
        if ev.shape[1] != x.shape[1]:
            raise ValueError(f"eval windows have {ev.shape[1]} columns, the training ones {x.shape[1]}")
    model = HistGradientBoostingClassifier(**{**TREE_PARAMS, "random_state": seed})
    model.fit(x, y)
    probs = [_rise_probability(model, e) for e in evals]
    return probs[0] if single else probs


def _rise_probability(model: Any, x: np.ndarray) -> np.ndarray:
    if x.shape[0] == 0:  # scikit-learn refuses an empty matrix; an empty split has no probabilities
        return np.empty(0, dtype=np.float64)
    return np.asarray(model.predict_proba(x)[:, 1], dtype=np.float64)
