"""Trades sharing a timestamp merged into events: by hand, against pandas, on real trades."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.ml.events import Events, merge_same_time

REAL_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "bitstamp_btcusd_2018-08.csv"


def test_groups_of_one_three_and_two() -> None:
    time = np.array([1.0, 2.0, 2.0, 2.0, 5.0, 5.0])
    price = np.array([10.0, 11.0, 12.0, 13.0, 20.0, 22.0])
    amount = np.array([1.0, 0.5, 0.25, 0.25, 2.0, 2.0])
    ev = merge_same_time(time, price, amount)
    assert len(ev) == 3
    np.testing.assert_array_equal(ev.time, [1.0, 2.0, 5.0])
    np.testing.assert_array_equal(ev.price, [10.0, 13.0, 22.0])  # the last trade's
    np.testing.assert_array_equal(ev.vwap, [10.0, 11.75, 21.0])
    np.testing.assert_array_equal(ev.amount, [1.0, 1.0, 4.0])
    np.testing.assert_array_equal(ev.fills, [1, 3, 2])
    np.testing.assert_array_equal(ev.first, [0, 1, 4])
    np.testing.assert_array_equal(ev.last, [0, 3, 5])
    assert ev.fills.dtype == ev.first.dtype == ev.last.dtype == np.int64
    t, p, a = ev.as_ticks()
    assert t.dtype == p.dtype == a.dtype == np.float64
    np.testing.assert_array_equal(np.stack([t, p, a]), np.stack([ev.time, ev.price, ev.amount]))


def test_a_group_with_no_amount_takes_the_mean_price() -> None:
    ev = merge_same_time(np.array([1.0, 1.0, 3.0]), np.array([10.0, 12.0, 7.0]), np.array([0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(ev.vwap, [11.0, 7.0])
    np.testing.assert_array_equal(ev.amount, [0.0, 0.0])


def test_no_trade_and_one_trade() -> None:
    none = merge_same_time(np.array([]), np.array([]), np.array([]))
    assert isinstance(none, Events) and len(none) == 0
    assert none.fills.dtype == np.int64 and none.vwap.dtype == np.float64
    one = merge_same_time(np.array([4.0]), np.array([9.5]), np.array([0.3]))
    assert len(one) == 1
    assert (one.price[0], one.vwap[0], one.amount[0], one.fills[0]) == (9.5, 9.5, 0.3, 1)
    assert (one.first[0], one.last[0]) == (0, 0)


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="time order: trade 2"):
        merge_same_time(np.array([1.0, 2.0, 1.5]), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="differ in length"):
        merge_same_time(np.array([1.0, 2.0]), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="1-D"):
        merge_same_time(np.ones((2, 2)), np.ones(4), np.ones(4))


def test_random_trades_match_a_pandas_groupby() -> None:
    rng = np.random.default_rng(7)
    n = 5000
    time = np.cumsum(rng.choice([0.0, 0.0, 0.001, 1.0], size=n)) + 1.5e9
    price = 6000.0 + np.cumsum(rng.normal(0.0, 0.5, size=n))
    amount = rng.exponential(0.1, size=n) * (rng.random(n) > 0.05)  # a few zero amounts
    ev = merge_same_time(time, price, amount)

    df = pd.DataFrame({"time": time, "price": price, "amount": amount, "notional": price * amount})
    df["i"] = np.arange(n)
    g = df.groupby((df["time"] != df["time"].shift()).cumsum(), sort=True)
    want = g.agg(
        time=("time", "first"),
        price=("price", "last"),
        mean_price=("price", "mean"),
        amount=("amount", "sum"),
        notional=("notional", "sum"),
        fills=("i", "size"),
        first=("i", "first"),
        last=("i", "last"),
    )
    assert 100 < len(ev) < n and len(ev) == len(want)
    np.testing.assert_array_equal(ev.time, want["time"])
    np.testing.assert_array_equal(ev.price, want["price"])
    np.testing.assert_array_equal(ev.fills, want["fills"])
    np.testing.assert_array_equal(ev.first, want["first"])
    np.testing.assert_array_equal(ev.last, want["last"])
    np.testing.assert_allclose(ev.amount, want["amount"], rtol=1e-12, atol=0)
    traded = want["amount"].to_numpy() > 0
    vwap = np.where(traded, want["notional"] / want["amount"].where(traded, 1.0), want["mean_price"])
    np.testing.assert_allclose(ev.vwap, vwap, rtol=1e-12, atol=0)
    assert (~traded).any()  # the mean-price branch was exercised


@pytest.mark.skipif(not REAL_CSV.exists(), reason=f"real Bitstamp ticks not present at {REAL_CSV}")
@pytest.mark.real_data
def test_bitstamp_trades_merge_into_fewer_events() -> None:
    from app.market.ticks import read_csv

    ticks = read_csv(REAL_CSV)
    ev = merge_same_time(ticks.time, ticks.price, ticks.amount)
    assert 0 < len(ev) < len(ticks)
    assert int(ev.fills.sum()) == len(ticks)
    assert ev.first[0] == 0 and ev.last[-1] == len(ticks) - 1
