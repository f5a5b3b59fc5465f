"""Plain tick series for tests that need numbers, not a market."""

from __future__ import annotations

import numpy as np

from app.market.ticks import TickArrays


def make_ticks(n: int, seed: int = 0, start_price: float = 100.0) -> TickArrays:
    """Plain numpy ticks (no market realism): prices on a 0.01 grid with many zero moves,
    irregular non-decreasing times, positive amounts."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([-1, 0, 0, 1], size=n - 1)
    price = start_price + 0.01 * np.concatenate(([0], np.cumsum(steps)))
    time = 1_600_000_000.0 + np.concatenate(([0.0], np.cumsum(rng.exponential(2.0, n - 1))))
    amount = rng.lognormal(-2.0, 1.5, n)
    return TickArrays(time, price, amount)
