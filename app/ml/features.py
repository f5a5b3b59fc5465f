"""Ticks -> scale-free feature rows -> windows; one code path for training and prediction.

Every feature is invariant to the price level (returns, not prices), so a model
trained at 6,000 USD serves at 60,000. On real trades most of the signal is
whether the price moved at all and which way (bid-ask bounce), so the flags
`up`/`down`/`flat` are given to the model directly instead of hoping it
recovers them from a standardised, heavy-tailed return.

Indexing convention: feature row r describes tick r + 1 (the move into it from
tick r). A window of L rows ending at tick i covers ticks i-L+1..i and needs
ticks i-L..i, i.e. L + 1 raw ticks. Its target is `price[i + h] > price[i]`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from app.market.ticks import TickArrays

FEATURES: tuple[str, ...] = ("log_return", "log_amount", "log_gap", "up", "down", "flat")
CLIP_SIGMAS = 10.0  # a 40-sigma print should not saturate a whole batch norm


def feature_matrix(ticks: TickArrays) -> np.ndarray:
    """(n - 1, len(FEATURES)) float32 rows, row r for tick r + 1."""
    if len(ticks) < 2:
        raise ValueError(f"need at least 2 ticks to compute features, got {len(ticks)}")
    p = np.asarray(ticks.price, dtype=np.float64)
    ret = np.diff(np.log(p))
    gap = np.maximum(np.diff(np.asarray(ticks.time, dtype=np.float64)), 0.0)
    out = np.empty((len(ret), len(FEATURES)), dtype=np.float32)
    out[:, 0] = ret
    out[:, 1] = np.log1p(np.asarray(ticks.amount[1:], dtype=np.float64))
    out[:, 2] = np.log1p(gap)
    out[:, 3] = ret > 0
    out[:, 4] = ret < 0
    out[:, 5] = ret == 0
    return out


def rise_targets(price: np.ndarray, horizon: int = 1) -> np.ndarray:
    """y[i] = price[i + horizon] > price[i] (strict), for i in 0 .. n - 1 - horizon."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    price = np.asarray(price)
    return (price[horizon:] > price[:-horizon]).astype(np.float32)


@dataclass(frozen=True)
class Normalizer:
    """Per-feature mean/std, fitted on the training split only (never on what it is scored on)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray) -> Normalizer:
        if len(rows) == 0:
            raise ValueError("cannot fit normalisation on zero rows")
        mean = rows.mean(axis=0, dtype=np.float64)
        std = rows.std(axis=0, dtype=np.float64)
        std = np.where(std > 1e-12, std, 1.0)  # a constant feature stays constant, not NaN
        return cls(mean.astype(np.float32), std.astype(np.float32))

    def apply(self, rows: np.ndarray) -> np.ndarray:
        z = (rows - self.mean) / self.std
        out: np.ndarray = np.clip(z, -CLIP_SIGMAS, CLIP_SIGMAS, out=z).astype(np.float32, copy=False)
        return out

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, list[float]]) -> Normalizer:
        return cls(np.asarray(d["mean"], dtype=np.float32), np.asarray(d["std"], dtype=np.float32))


def windows(rows: torch.Tensor, seq_len: int) -> torch.Tensor:
    """All windows of `seq_len` consecutive rows as a strided view (N, L, F); nothing is copied.

    Indexing the view with a batch of window indices gathers just that batch,
    so a training epoch never materialises N x L x F floats.
    """
    if seq_len < 1:
        raise ValueError(f"sequence length must be >= 1, got {seq_len}")
    if rows.shape[0] < seq_len:
        raise ValueError(f"need at least {seq_len} feature rows for one window, got {rows.shape[0]}")
    return rows.unfold(0, seq_len, 1).transpose(1, 2)


def min_ticks(seq_len: int) -> int:
    """Raw ticks needed for one prediction."""
    return seq_len + 1


def last_window(ticks: TickArrays, seq_len: int, norm: Normalizer) -> np.ndarray:
    """The (L, F) window ending at the last tick: the prediction input."""
    need = min_ticks(seq_len)
    if len(ticks) < need:
        raise ValueError(f"need at least {need} ticks (sequence length {seq_len} + 1), got {len(ticks)}")
    return norm.apply(feature_matrix(ticks[len(ticks) - need :]))


def windows_ending_at(ticks: TickArrays, seq_len: int, norm: Normalizer, first: int) -> np.ndarray:
    """The (n - first, L, F) windows ending at ticks first .. n - 1, from one feature pass.

    Window k is exactly `last_window(ticks[:first + k + 1], ...)` (every feature is
    computed row by row), at a fraction of the cost of building each on its own.
    """
    if not seq_len <= first < len(ticks):
        raise ValueError(f"windows can end at ticks {seq_len} .. {len(ticks) - 1}, not from {first}")
    rows = norm.apply(feature_matrix(ticks[first - seq_len :]))
    view = np.lib.stride_tricks.sliding_window_view(rows, seq_len, axis=0)  # (k, F, L)
    return view.transpose(0, 2, 1).copy()  # C order, writable (torch wants to own it)


@dataclass(frozen=True)
class Split:
    """Chronological window ranges [start, stop) into the window index space."""

    train: tuple[int, int]
    val: tuple[int, int]
    test: tuple[int, int] | None


def chronological_split(n_windows: int, train: float, val: float, horizon: int = 1) -> Split:
    """Train, then validation, then (whatever is left) test, never shuffled across a boundary.

    The last `horizon` windows before each boundary are dropped: their targets
    look at ticks that belong to the next split.
    """
    if not (0 < train < 1) or not (0 < val < 1) or train + val > 1 + 1e-9:
        raise ValueError(f"split fractions must be in (0, 1) and sum to <= 1, got {train}, {val}")
    n_tr = int(n_windows * train)
    n_va = int(n_windows * val)
    if train + val >= 1 - 1e-9:
        n_va = n_windows - n_tr
    tr = (0, max(0, n_tr - horizon))
    has_test = n_windows - n_tr - n_va > horizon
    va = (n_tr, n_tr + n_va - (horizon if has_test else 0))
    te = (n_tr + n_va, n_windows) if has_test else None
    for name, (a, b) in (("train", tr), ("validation", va)):
        if b - a < 1:
            raise ValueError(
                f"the {name} split is empty ({n_windows} windows in all); use more ticks "
                "or a shorter sequence length"
            )
    return Split(tr, va, te)


@dataclass
class WindowedData:
    """Everything training needs from one tick series, built once."""

    rows: torch.Tensor  # (n - 1, F) standardised feature rows
    targets: torch.Tensor  # (N,) target of window j
    split: Split
    norm: Normalizer
    seq_len: int
    horizon: int

    @property
    def windows(self) -> torch.Tensor:
        return windows(self.rows, self.seq_len)[: len(self.targets)]

    def to(self, device: torch.device | str) -> WindowedData:
        return WindowedData(
            self.rows.to(device), self.targets.to(device), self.split, self.norm, self.seq_len, self.horizon
        )


def build_dataset(
    ticks: TickArrays,
    seq_len: int,
    *,
    horizon: int = 1,
    train: float = 0.6,
    val: float = 0.2,
    norm: Normalizer | None = None,
) -> WindowedData:
    """Features, targets and the split; normalisation fitted on the training rows unless given
    (a resumed run or an evaluation reuses the checkpoint's)."""
    raw = feature_matrix(ticks)
    # window j covers rows j .. j+L-1 and ends at tick j+L; its target needs tick j+L+h
    n_windows = len(ticks) - seq_len - horizon
    if n_windows < 3:
        raise ValueError(
            f"need more than {seq_len + horizon + 2} ticks for sequence length {seq_len}, got {len(ticks)}"
        )
    split = chronological_split(n_windows, train, val, horizon)
    if norm is None:
        norm = Normalizer.fit(raw[: split.train[1] + seq_len - 1])
    y = rise_targets(ticks.price, horizon)[seq_len : seq_len + n_windows]
    return WindowedData(torch.from_numpy(norm.apply(raw)), torch.from_numpy(y), split, norm, seq_len, horizon)
