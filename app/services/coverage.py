"""A market's coverage as the API and training use it: the store's ledger of its gaps (what
GET /markets/{exchange}/{symbol}/coverage answers), and ticks cut at those gaps into the
series a model trains on, with what the cuts cost in windows.

Why cut: a window's features read the move from each tick to the next, so a window across
a gap (hours without a trade, or trades never stored) learns a move that no one traded.
`fit()` never builds a window across two series; cutting at the gaps makes each stretch of
complete data its own series. The gaps are `app.market.coverage`'s, so the API lists the
very places training cuts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.market.coverage import Coverage, split_at_gaps
from app.market.markets import Market
from app.market.ticks import TickArrays
from app.ml import features
from app.ml.config import TrainConfig
from app.ml.enough import MIN_WINDOWS, history_of

if TYPE_CHECKING:
    from app.ml.checkpoint import Model
    from app.services.markets import Markets


def market_coverage(markets: Markets, market: Market, *, gap_s: float, limit: int) -> Coverage:
    """The market's gaps over `gap_s` seconds and its missing trade ids, the first `limit` of
    each listed (every one counted); NotAMarket for a market neither configured nor stored.
    Blocks on the store: call it from a thread when on the event loop."""
    markets.require(market)
    return markets.store.gaps(market.exchange, market.symbol, gap_s, limit)


class TooFewAfterGaps(ValueError):
    """Enough ticks in all, but the stretches between the market's gaps hold too few training
    windows; the message says how many, and `todo` what gets more."""


@dataclass(frozen=True)
class GapSplit:
    """Ticks cut at their gaps for training: the pieces long enough to train on, in time order,
    and the cost of the cuts in windows."""

    series: list[TickArrays]
    gaps: int  # cuts made
    windows: int  # the uncut ticks would have had
    kept: int  # the series have
    dropped: int  # pieces too short to train on (their windows count as removed)

    @property
    def windows_removed(self) -> int:
        return self.windows - self.kept

    def info(self, gap_s: float) -> dict[str, Any]:
        """What a job's result and a checkpoint's `data` record of the cuts."""
        return {"gap_s": gap_s, "gaps": self.gaps, "gap_windows_removed": self.windows_removed}


def windows_for(ticks: TickArrays, min_ticks: int, horizon: int, target: str) -> int:
    """Windows `fit()` (or a scoring) builds on one series: one per tick (event, for the event
    target) that has the `min_ticks` a prediction needs up to it (a window spec's: its L + 1
    and the history its columns read) and the tick `horizon` after it, as
    `features.build_dataset` counts them."""
    units = len(features.columns(ticks, target)) if len(ticks) else 0
    return max(0, units - (min_ticks - 1) - horizon)


def windows_in(ticks: TickArrays, cfg: TrainConfig) -> int:
    """`windows_for` a model that `cfg` trains."""
    return windows_for(ticks, cfg.seq_len + 1 + history_of(cfg), cfg.horizon, cfg.target)


def splittable(n_windows: int, split: tuple[float, float], horizon: int) -> bool:
    """Whether a series of this many windows can be split in time order on its own (each part
    needs a window once the windows next to a boundary are purged)."""
    if n_windows < 3:
        return False
    try:
        features.chronological_split(n_windows, *split, horizon)
    except ValueError:
        return False
    return True


def trainable(n_windows: int, cfg: TrainConfig) -> bool:
    """Whether `fit()` can train on a series of this many windows with `cfg`'s split."""
    return splittable(n_windows, (cfg.train_split, cfg.val_split), cfg.horizon)


def scorable(series: list[TickArrays], models: list[Model], split: tuple[float, float]) -> list[TickArrays]:
    """The series every model can be scored on with `split` (each by its own window spec and
    horizon): where models are compared on the same windows, a model that reads longer
    windows than the others may not fit in the shortest stretches between gaps."""
    return [
        s
        for s in series
        if all(
            splittable(windows_for(s, m.spec.min_ticks, m.meta.horizon, m.spec.target), split, m.meta.horizon)
            for m in models
        )
    ]


def split_for_training(
    ticks: TickArrays, cfg: TrainConfig, gap_s: float, *, what: str = "the data", todo: str = ""
) -> GapSplit:
    """`ticks` cut at every gap (`app.market.coverage.split_at_gaps`), the pieces too short to
    train on left out. TooFewAfterGaps when what is left has fewer than MIN_WINDOWS windows."""
    pieces = split_at_gaps(ticks, gap_s)
    whole = windows_in(ticks, cfg)
    if len(pieces) <= 1:  # nothing cut: fit() judges the series itself
        return GapSplit([_columns(p) for p in pieces], 0, whole, whole, 0)
    counts = [windows_in(p, cfg) for p in pieces]
    series = [_columns(p) for p, k in zip(pieces, counts, strict=True) if trainable(k, cfg)]
    kept = sum(k for k in counts if trainable(k, cfg))
    split = GapSplit(series, len(pieces) - 1, whole, kept, len(pieces) - len(series))
    if kept < MIN_WINDOWS:
        raise TooFewAfterGaps(
            f"{what} has {len(ticks):,} ticks, but {split.gaps:,} gaps (over {gap_s:g} s without a "
            f"trade, or trade ids missing) cut them into {len(pieces):,} pieces with {kept:,} "
            f"training windows in all; training needs at least {MIN_WINDOWS:,}"
            + (f": {todo}" if todo else "")
        )
    return split


def _columns(ticks: TickArrays) -> TickArrays:
    """The columns fit() reads: the ids only found the cuts, and a view of them would keep the
    whole market's ids alive."""
    return TickArrays(ticks.time, ticks.price, ticks.amount)
