"""Ticks -> scale-free feature rows -> windows; one code path for training and prediction.

Every feature is invariant to the price level (returns, not prices), so a model
trained at 6,000 USD serves at 60,000. The columns are named (`app.ml.rows`) and
a checkpoint records its own list, so an old model keeps computing what it was
trained on while new models get the richer default.

Two targets answer two questions. `tick`: will the next trade print higher than
this one? `event`: trades that share a timestamp (the maker fills of one taker
order) are merged first, so the question is whether the next *order* prints
higher, not whether the same order keeps walking the book.

Indexing convention: feature row r describes tick r + 1 (the move into it from
tick r). A window of L rows ending at tick i covers ticks i-L+1..i and needs
ticks i-L..i, i.e. L + 1 raw ticks. Its target is `price[i + h] > price[i]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch

from app.market.ticks import TickArrays
from app.ml import events, rows

# What checkpoints written before named features computed, in this order.
LEGACY_FEATURES: tuple[str, ...] = ("log_return", "log_amount", "log_gap", "up", "down", "flat")
# New models' columns: the continuous ones first (TickNet ramps the leading `ramped` of them), then
# the flags and the tick rule's sign, which are their own ramps already.
RAMPED: tuple[str, ...] = ("log_return", "log_amount", "log_gap", "last_move", "flat_run")
FEATURES: tuple[str, ...] = (*RAMPED, "up", "down", "flat", "tick_sign")
EVENT_RAMPED: tuple[str, ...] = (*RAMPED, "log_fills", "vwap_offset")
EVENT_FEATURES: tuple[str, ...] = (*EVENT_RAMPED, "up", "down", "flat", "tick_sign")
TARGETS: tuple[str, ...] = ("tick", "event")
CLIP_SIGMAS = 10.0  # a 40-sigma print should not saturate a whole batch norm


def default_features(target: str) -> tuple[str, ...]:
    return EVENT_FEATURES if target == "event" else FEATURES


def default_ramped(target: str) -> int:
    """How many leading columns of `default_features(target)` are continuous."""
    return len(EVENT_RAMPED if target == "event" else RAMPED)


def columns(ticks: TickArrays, target: str = "tick") -> rows.Columns:
    """The series the features and targets are computed on: the ticks, or their events."""
    if target == "tick":
        return rows.Columns(ticks.time, ticks.price, ticks.amount)
    if target != "event":
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    ev = events.merge_same_time(ticks.time, ticks.price, ticks.amount)
    return rows.Columns(ev.time, ev.price, ev.amount, ev.fills, ev.vwap)


def feature_matrix(ticks: TickArrays | rows.Columns, names: Sequence[str] = FEATURES) -> np.ndarray:
    """(n - 1, len(names)) float32 rows, row r for tick r + 1."""
    c = ticks if isinstance(ticks, rows.Columns) else columns(ticks)
    return rows.matrix(c, names)


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
    """Raw ticks one prediction needs from the ancestor's six columns (no history); a model's
    own need, history and events included, is `WindowSpec.min_ticks`."""
    return seq_len + 1


def _tail(c: rows.Columns, k: int) -> rows.Columns:
    def cut(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[len(a) - k :]

    return rows.Columns(
        c.time[len(c) - k :], c.price[len(c) - k :], c.amount[len(c) - k :], cut(c.fills), cut(c.vwap)
    )


@dataclass(frozen=True)
class WindowSpec:
    """How a model turns ticks into its input: window length, columns, target and the
    training split's standardisation. A checkpoint carries one; serving and scoring use it."""

    seq_len: int
    norm: Normalizer
    names: tuple[str, ...] = LEGACY_FEATURES
    target: str = "tick"

    @cached_property  # read on every /predict: the names never change
    def history(self) -> int:
        """Rows before the window that its columns read (the tick rule's lookback)."""
        return rows.lookback(self.names)

    @property
    def min_ticks(self) -> int:
        """Ticks (events, for the event target) one prediction needs: the window's L + 1 and the
        history its columns look back on."""
        return self.seq_len + 1 + self.history

    def first_full(self, ticks: TickArrays) -> int:
        """The first tick a whole window can end at: min_ticks - 1 for the tick target; for the
        event target the tick that starts the min_ticks-th event (len(ticks) when none does)."""
        if self.target == "tick":
            return self.min_ticks - 1
        starts = np.flatnonzero(np.diff(np.asarray(ticks.time)) != 0) + 1  # where events 2, 3, ... begin
        k = self.min_ticks - 2
        return int(starts[k]) if len(starts) > k else len(ticks)

    def last_window(self, ticks: TickArrays) -> np.ndarray:
        """The (L, F) window ending at the last tick: the prediction input.

        For the event target the last event may still grow (more fills of the same
        timestamp can arrive); the window describes it as far as it is known."""
        need, what = self.min_ticks, f"sequence length {self.seq_len} + 1 + {self.history} of history"
        if self.target == "tick":
            if len(ticks) < need:
                raise ValueError(f"need at least {need} ticks ({what}), got {len(ticks)}")
            z = feature_matrix(ticks[len(ticks) - need :], self.names)
        else:
            c = columns(ticks, "event")
            if len(c) < need:
                raise ValueError(
                    f"need at least {need} events ({what}; trades that share a timestamp are one "
                    f"event), got {len(c)} from {len(ticks)} ticks"
                )
            z = rows.matrix(_tail(c, need), self.names)
        return self.norm.apply(z[self.history :])

    def windows_ending_at(self, ticks: TickArrays, first: int) -> np.ndarray:
        """The (n - first, L, F) windows ending at ticks first .. n - 1.

        Window k is exactly `last_window(ticks[:first + k + 1])`; for the tick target it comes
        from one feature pass, at a fraction of the cost of building each on its own."""
        if not self.first_full(ticks) <= first < len(ticks):
            raise ValueError(
                f"windows can end at ticks {self.first_full(ticks)} .. {len(ticks) - 1}, not from {first}"
            )
        if self.target == "event":
            return np.stack([self.last_window(ticks[: i + 1]) for i in range(first, len(ticks))])
        view = np.lib.stride_tricks.sliding_window_view(
            self.rows_ending_at(ticks, first), self.seq_len, axis=0
        )
        return view.transpose(0, 2, 1).copy()  # (k, L, F), C order, writable (torch wants to own it)

    def rows_ending_at(self, ticks: TickArrays, first: int) -> np.ndarray:
        """The standardised rows whose windows of seq_len end at ticks first .. n - 1 (tick target):
        window k is rows k .. k + seq_len - 1, so a scorer may share the rows between windows."""
        z = self.norm.apply(feature_matrix(ticks[first - self.seq_len - self.history :], self.names))
        return z[self.history :]


def last_window(ticks: TickArrays, seq_len: int, norm: Normalizer) -> np.ndarray:
    """The ancestor's prediction input (its six columns): `WindowSpec.last_window`."""
    return WindowSpec(seq_len, norm).last_window(ticks)


def windows_ending_at(ticks: TickArrays, seq_len: int, norm: Normalizer, first: int) -> np.ndarray:
    return WindowSpec(seq_len, norm).windows_ending_at(ticks, first)


@dataclass(frozen=True)
class Split:
    """Window starts (positions into `WindowedData.windows`) of each part, in time order."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None

    def part(self, name: str) -> np.ndarray:
        idx: np.ndarray | None = getattr(self, name)
        if idx is None or len(idx) == 0:
            raise ValueError(f"the data has no {name} split; lower --split so that train + val < 1")
        return idx


Ranges = tuple[tuple[int, int], tuple[int, int], tuple[int, int] | tuple[()]]


def chronological_split(n_windows: int, train: float, val: float, horizon: int = 1) -> Ranges:
    """Train, then validation, then (whatever is left) test ranges of one series, never
    shuffled across a boundary: ((start, stop), (start, stop), (start, stop) or ()).

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
    te = (n_tr + n_va, n_windows) if has_test else ()
    for name, (a, b) in (("train", tr), ("validation", va)):
        if b - a < 1:
            raise ValueError(
                f"the {name} split is empty ({n_windows} windows in all); use more ticks "
                "or a shorter sequence length"
            )
    return tr, va, te


@dataclass
class WindowedData:
    """Everything training and scoring need from one or more tick series, built once.

    The series' rows lie back to back; a window starts at a row and never crosses into the
    next series, and each part of the split lists its window starts."""

    rows: torch.Tensor  # (R, F) standardised feature rows
    targets: torch.Tensor  # (R - L + 1,) target of the window starting at each row (0 where none does)
    split: Split
    norm: Normalizer
    seq_len: int
    horizon: int
    raw: np.ndarray  # (R, F) the rows before standardising (the baselines fit on these)
    names: tuple[str, ...] = FEATURES
    n_series: int = 1
    n_windows: int = 0  # in all series, the ones purged at split boundaries included

    @property
    def windows(self) -> torch.Tensor:
        return windows(self.rows, self.seq_len)

    def y(self, idx: np.ndarray) -> np.ndarray:
        return self.targets[torch.from_numpy(idx).to(self.targets.device)].float().cpu().numpy()

    def to(self, device: torch.device | str) -> WindowedData:
        return replace(self, rows=self.rows.to(device), targets=self.targets.to(device))


@dataclass(frozen=True)
class _Series:
    raw: np.ndarray
    targets: np.ndarray  # of windows 0, 1, ..., which start at row `first`, first + 1, ...
    parts: Ranges
    first: int  # the first row a window starts at: after the history its columns read


def _series(
    ticks: TickArrays,
    seq_len: int,
    horizon: int,
    split: tuple[float, float] | None,
    names: Sequence[str],
    target: str,
) -> _Series:
    c = columns(ticks, target)
    # window j covers rows k+j .. k+j+L-1 (k rows of history before it) and ends at tick k+j+L;
    # its target needs tick k+j+L+h
    k = rows.lookback(names)
    n_windows = len(c) - seq_len - horizon - k
    if n_windows < 3:
        unit = "ticks" if target == "tick" else "events"
        raise ValueError(
            f"need more than {seq_len + horizon + k + 2} {unit} for sequence length {seq_len}, got {len(c)}"
        )
    parts: Ranges = (
        chronological_split(n_windows, *split, horizon) if split else ((0, 0), (0, 0), (0, n_windows))
    )
    y = rise_targets(c.price, horizon)[k + seq_len : k + seq_len + n_windows]
    return _Series(rows.matrix(c, names), y, parts, k)


def build_dataset(
    ticks: TickArrays | Sequence[TickArrays],
    seq_len: int,
    *,
    horizon: int = 1,
    train: float = 0.6,
    val: float = 0.2,
    norm: Normalizer | None = None,
    names: Sequence[str] = FEATURES,
    target: str = "tick",
    whole: bool = False,
) -> WindowedData:
    """Features, targets and the split of one series or several (each split on its own, in time
    order, so a model may learn from several markets at once); normalisation fitted on the
    training rows unless given (a resumed run or an evaluation reuses the checkpoint's).

    `whole`: no split, every window is scored (`split.test`): a model meeting new data."""
    names = rows.check_names(names)
    many = [ticks] if isinstance(ticks, TickArrays) else list(ticks)
    if not many:
        raise ValueError("no tick series to build windows from")
    if whole and norm is None:
        raise ValueError("scoring every window needs the model's normalisation")
    series = [_series(t, seq_len, horizon, None if whole else (train, val), names, target) for t in many]
    if norm is None:
        norm = Normalizer.fit(
            np.concatenate([s.raw[s.first : s.first + s.parts[0][1] + seq_len - 1] for s in series])
        )
    raw = np.concatenate([s.raw for s in series])
    targets = np.zeros(len(raw) - seq_len + 1, dtype=np.float32)
    parts: list[list[np.ndarray]] = [[], [], []]
    offset = 0
    for s in series:
        at = offset + s.first
        targets[at : at + len(s.targets)] = s.targets
        for k, rng in enumerate(s.parts):
            parts[k].append(np.arange(*rng, dtype=np.int64) + at if rng else np.empty(0, np.int64))
        offset += len(s.raw)
    tr, va, te = (np.concatenate(p) for p in parts)
    split = Split(tr, va, te if len(te) else None)
    z = torch.from_numpy(norm.apply(raw))
    n_windows = sum(len(s.targets) for s in series)
    return WindowedData(
        z, torch.from_numpy(targets), split, norm, seq_len, horizon, raw, names, len(series), n_windows
    )
