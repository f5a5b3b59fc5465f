"""Shared fixtures for the ML tests: small synthetic tick series, built once per session."""

from __future__ import annotations

import numpy as np
import pytest

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


@pytest.fixture(name="make_ticks")
def make_ticks_fixture():
    """The `make_ticks(n, seed=0, start_price=100.0)` factory."""
    return make_ticks


@pytest.fixture(scope="session")
def synth_ticks() -> TickArrays:
    """A few thousand ticks of the seeded synthetic market."""
    from app.market.sources import synthetic

    return synthetic.generate(6000, seed=1)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The nets here are tiny: one thread is as fast, and it does not collapse when other
    processes share the cores (two spinning threads on two busy cores can be 20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
