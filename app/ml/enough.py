"""How many ticks are enough to train on, and what a run says when they are few.

Every entry point (the `/train` request, the job worker, `fit()` and so the
command line) applies the same rule, from here.
"""

from __future__ import annotations

import math

from app.ml import rows
from app.ml.config import TrainConfig

# Training needs at least MIN_WINDOWS windows (a window: seq_len ticks, scored on the tick `horizon`
# after them), and below FEW_WINDOWS its result carries a warning. Below 1,000 windows the validation
# split holds under 200, whose AUC is uncertain by +-0.09 (95%): most of the 0.13 between chance and
# the best model on real trades (0.63), so the metrics cannot tell a useful model from a useless one
# (the job on 904 ticks that scored 0.511 and said nothing). Above it they can, but the model learns
# little: the default CNN on the synthetic market, test AUC over 6 seeds (mean +- sd): 1,000 windows
# 0.51 +- 0.05, 2,000 0.51 +- 0.04, 5,000 0.57 +- 0.03, 10,000 0.58 +- 0.01, 30,000 0.59 +- 0.01.
MIN_WINDOWS = 1_000
FEW_WINDOWS = 10_000


class TooFewTicks(ValueError):
    """Fewer than MIN_WINDOWS training windows: the model's metrics would be noise. The message
    says how many ticks are needed for the configured sequence length (`shortfall`), then what
    gets more (`todo`), so a caller with other means may say its own `todo`."""

    def __init__(
        self, what: str, n_ticks: int, seq_len: int, horizon: int, todo: str, history: int = 0
    ) -> None:
        self.n_ticks, self.needed = n_ticks, ticks_needed(seq_len, horizon, history)
        extra = f", horizon {horizon} and {history} rows of history" if history else f" and horizon {horizon}"
        self.shortfall = (
            f"{what} has {n_ticks:,} ticks; training needs at least {MIN_WINDOWS:,} windows, i.e. "
            f"{self.needed:,} ticks at seq_len {seq_len}{extra}"
        )
        super().__init__(f"{self.shortfall}: {todo}")


def ticks_needed(seq_len: int, horizon: int = 1, history: int = 0) -> int:
    """Ticks that make MIN_WINDOWS windows (each window's target is `horizon` ticks past it, and
    its columns read `history` rows before it)."""
    return MIN_WINDOWS + seq_len + horizon + history


def history_of(cfg: TrainConfig) -> int:
    """The rows of history before each window that `cfg`'s feature columns read."""
    return rows.lookback(cfg.feature_names())


def check_enough_ticks(
    n_ticks: int,
    cfg: TrainConfig,
    what: str = "the data",
    todo: str = "use more ticks (a longer time range, or a bigger file)",
) -> None:
    """TooFewTicks unless `n_ticks` make MIN_WINDOWS windows for `cfg`."""
    history = history_of(cfg)
    if n_ticks < ticks_needed(cfg.seq_len, cfg.horizon, history):
        raise TooFewTicks(what, n_ticks, cfg.seq_len, cfg.horizon, todo, history)


def few_ticks_warning(n_windows: int, n_val_pos: int, n_val_neg: int) -> str | None:
    """Below FEW_WINDOWS: how noisy the validation AUC is (the 95% half-width of a chance-level
    AUC on this many rises and non-rises, Hanley and McNeil), and what would help."""
    if n_windows >= FEW_WINDOWS:
        return None
    p, n = max(n_val_pos, 1), max(n_val_neg, 1)
    half = 1.96 * math.sqrt((p + n + 1) / (12 * p * n))
    return (
        f"few ticks: {n_windows:,} windows ({n_val_pos + n_val_neg:,} to validate), so metrics are "
        f"noisy (validation AUC +-{half:.2f}); train on {FEW_WINDOWS:,} windows or more to trust them"
    )
