"""Shared fixtures for the ML tests: small synthetic tick series, built once per session."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from app.market.ticks import TickArrays
from tests.helpers.ticks import make_ticks


@pytest.fixture(name="make_ticks")
def make_ticks_fixture() -> Callable[..., TickArrays]:
    """The `make_ticks(n, seed=0, start_price=100.0)` factory."""
    return make_ticks


@pytest.fixture(scope="session")
def synth_ticks() -> TickArrays:
    """A few thousand ticks of the seeded synthetic market."""
    from app.market.sources import synthetic

    return synthetic.generate(6000, seed=1)


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The nets here are tiny: one thread is as fast, and it does not collapse when other
    processes share the cores (two spinning threads on two busy cores can be 20x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
