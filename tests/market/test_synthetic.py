"""The synthetic market: reproducible, valid, and shaped like real Bitstamp ticks."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from app.market.sources.synthetic import (
    DEFAULT_START_PRICE,
    SyntheticMarket,
    SyntheticParams,
    generate,
    tick_stats,
)
from app.market.ticks import TickArrays, read_csv, validate

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
REAL_CSV = SHARED / "data" / "bitstamp_btcusd_2018-08.csv"

# Measured on REAL_CSV (Bitstamp BTC-USD, Aug 2018, 102,588 trades).
REAL = {
    "zero_frac": 0.323,
    "p_rise_after_up": 0.403,
    "p_rise_after_down": 0.360,
    "p_rise_after_zero": 0.247,
    "rise_rate": 0.338,
}


def assert_same(a: TickArrays, b: TickArrays) -> None:
    assert len(a) == len(b)
    for name in ("time", "price", "amount"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert list(a.trade_id) == list(b.trade_id)
    assert list(a.side) == list(b.side)


@pytest.fixture(scope="module")
def big() -> dict[int, TickArrays]:
    return {seed: generate(100_000, seed=seed) for seed in (0, 1)}


def test_same_seed_same_ticks() -> None:
    assert_same(generate(20_000, seed=3), generate(20_000, seed=3))


def test_different_seeds_differ() -> None:
    a, b = generate(2_000, seed=1), generate(2_000, seed=2)
    assert not np.array_equal(a.price, b.price)
    assert not np.array_equal(a.time, b.time)


@pytest.mark.parametrize("block_orders", [64, 8192])
def test_chunked_equals_one_shot(block_orders: int) -> None:
    params = replace(SyntheticParams(), block_orders=block_orders)
    market = SyntheticMarket(7, start_time=1_000.0, params=params)
    rng = np.random.default_rng(0)
    t, parts = 1_000.0, []
    while t < 150_000.0:  # steps far shorter and far longer than a tick gap; >= 2 blocks
        t += float(rng.choice([0.3, 1.0, 7.0, 90.0, 5_000.0]))
        part = market.ticks_until(t)
        assert len(part) == 0 or part.time[-1] <= t
        parts.append(part)
    chunked = TickArrays.concat(parts)
    assert len(chunked) > 20_000
    assert_same(chunked, generate(len(chunked), seed=7, start_time=1_000.0, params=params))
    assert market.last_time == chunked.time[-1]
    assert len(market.ticks_until(t)) == 0  # nothing is handed out twice
    nxt = market.take(5)
    assert nxt.time[0] > t and nxt.trade_id[0] == str(len(chunked))


def test_ticks_are_valid(big: dict[int, TickArrays]) -> None:
    ticks = big[0]
    validate(ticks)
    assert np.all(np.diff(ticks.time) >= 0)
    assert np.all(ticks.price > 0) and np.all(ticks.amount > 0)
    assert set(ticks.side) == {"buy", "sell"}
    assert ticks.trade_id[0] == "0" and len(set(ticks.trade_id)) == len(ticks)
    cents = ticks.price * 100
    np.testing.assert_allclose(cents, np.round(cents), atol=1e-6)  # on the 0.01 tick grid
    np.testing.assert_array_equal(ticks.time, np.floor(ticks.time))  # whole seconds, as Bitstamp
    assert abs(ticks.price[0] / DEFAULT_START_PRICE - 1) < 0.01


def test_start_and_time_resolution_are_respected() -> None:
    params = replace(SyntheticParams(), time_resolution=0.0)
    ticks = generate(3_000, seed=4, start_time=10.5, start_price=50.0, params=params)
    validate(ticks)
    assert ticks.time[0] > 10.5 and np.any(ticks.time % 1 != 0)
    assert 45 < ticks.price[0] < 55


def test_price_stays_plausible() -> None:
    """Prices wander like a real market's (weeks of trading here) but never blow up."""
    price = generate(300_000, seed=11).price / DEFAULT_START_PRICE
    assert 0.5 < price.min() and price.max() < 2


@pytest.mark.parametrize("seed", [0, 1])
def test_calibrated_to_real_ticks(big: dict[int, TickArrays], seed: int) -> None:
    stats = tick_stats(big[seed])
    for key, want in REAL.items():
        assert stats[key] == pytest.approx(want, abs=0.03), key


def test_next_move_is_learnable(big: dict[int, TickArrays]) -> None:
    """A lookup table on the last two moves, fitted on one half, ranks the other."""
    s = np.sign(np.diff(big[1].price)).astype(int) + 1  # 0 down, 1 flat, 2 up
    state, rise = 3 * s[:-2] + s[1:-1], s[2:] == 2
    half = len(rise) // 2
    table = np.bincount(state[:half], weights=rise[:half], minlength=9) / np.maximum(
        np.bincount(state[:half], minlength=9), 1
    )
    score, y = table[state[half:]], rise[half:]
    ranks = np.empty(len(score))
    order = np.argsort(score, kind="stable")
    _, inv, counts = np.unique(score[order], return_inverse=True, return_counts=True)
    ranks[order] = (np.cumsum(counts) - (counts - 1) / 2)[inv]  # average ranks for ties
    n_pos = y.sum()
    auc = (ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(y) - n_pos))
    assert 0.56 < auc < 0.66


def test_tick_stats_counts_moves() -> None:
    price = np.array([10.0, 10.0, 11.0, 12.0, 11.0, 11.0, 12.0])  # moves 0 + + - 0 +
    n = len(price)
    stats = tick_stats(TickArrays(np.arange(n, dtype=float), price, np.ones(n)))
    assert stats["zero_frac"] == pytest.approx(2 / 6)
    assert stats["rise_rate"] == pytest.approx(3 / 6)
    assert stats["p_rise_after_up"] == pytest.approx(1 / 2)
    assert stats["p_rise_after_down"] == 0.0
    assert stats["p_rise_after_zero"] == 1.0


def test_tick_stats_of_too_few_ticks_are_nan() -> None:
    stats = tick_stats(TickArrays.empty())
    assert stats["n"] == 0 and all(np.isnan(v) for k, v in stats.items() if k != "n")


def test_params_are_checked() -> None:
    with pytest.raises(ValueError, match="regime"):
        SyntheticParams(regime_gap_s=(1.0, 2.0))
    with pytest.raises(ValueError, match="start_price"):
        generate(10, start_price=0.0)
    with pytest.raises(ValueError, match="t_end"):
        SyntheticMarket().ticks_until(float("inf"))


@pytest.mark.skipif(not REAL_CSV.exists(), reason=f"real Bitstamp ticks not present at {REAL_CSV}")
@pytest.mark.real_data
def test_real_ticks_have_the_calibration_targets() -> None:
    stats = tick_stats(read_csv(REAL_CSV))
    for key, want in REAL.items():
        assert stats[key] == pytest.approx(want, abs=0.002), key
