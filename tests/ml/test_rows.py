"""Named columns: the tick rule by hand and its bounded lookback, name checks, event-only
columns, scale invariance; the prediction window with history; and the event target, whose
rows are computed on trades merged per timestamp."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from app.market.ticks import TickArrays
from app.ml import rows
from app.ml.events import Events, merge_same_time
from app.ml.features import (
    EVENT_FEATURES,
    FEATURES,
    LEGACY_FEATURES,
    RAMPED,
    Normalizer,
    WindowSpec,
    build_dataset,
    chronological_split,
    feature_matrix,
)
from app.ml.rows import LOOKBACK

# tick:    0    1    2    3    4    5    6
PRICE = [100, 101, 101, 101, 100, 100, 102]
TICK_RULE = ("tick_sign", "last_move", "flat_run")
# the event columns without the tick rule: each row depends on its own two events only
EVENT_PLAIN = ("log_return", "log_amount", "log_gap", "log_fills", "vwap_offset", "up", "down", "flat")


def plain(price: list[float]) -> rows.Columns:
    n = len(price)
    return rows.Columns(np.arange(float(n)), np.array(price, dtype=np.float64), np.ones(n))


def event_columns(ev: Events) -> rows.Columns:
    return rows.Columns(ev.time, ev.price, ev.amount, ev.fills, ev.vwap)


def event_ticks(make_ticks: Callable[..., TickArrays], n: int, seed: int) -> TickArrays:
    """Ticks whose times are cut to a 5 s grid: about 2.5 trades share each timestamp."""
    t = make_ticks(n, seed=seed)
    return TickArrays(np.floor(t.time / 5.0) * 5.0, t.price, t.amount)


def test_feature_names_legacy_first_then_the_tick_rule():
    # old checkpoints computed exactly these six, in this order
    assert LEGACY_FEATURES == ("log_return", "log_amount", "log_gap", "up", "down", "flat")
    assert set(LEGACY_FEATURES) < set(FEATURES) and len(set(FEATURES)) == len(FEATURES)
    assert FEATURES[: len(RAMPED)] == RAMPED  # the continuous columns lead (TickNet ramps them)
    assert set(TICK_RULE) <= set(FEATURES) and not rows.EVENT_ONLY & set(FEATURES)
    assert set(EVENT_FEATURES) - set(FEATURES) == rows.EVENT_ONLY
    assert set(rows.NAMES) == set(FEATURES) | rows.EVENT_ONLY
    assert rows.lookback(LEGACY_FEATURES) == rows.lookback(EVENT_PLAIN) == 0  # no history read
    assert rows.lookback(FEATURES) == rows.lookback(("up", "flat_run")) == LOOKBACK


# ---------------------------------------------------------------- the tick rule by hand


def test_tick_rule_columns_hand_computed():
    f = rows.matrix(plain(PRICE), TICK_RULE)
    up, down, up2 = math.log(101 / 100), math.log(100 / 101), math.log(102 / 100)
    # moves into ticks 1..6:     +    0    0    -    0    +
    np.testing.assert_array_equal(f[:, 0], [1, 1, 1, -1, -1, 1])  # the last move's sign, carried
    np.testing.assert_allclose(f[:, 1], [up, up, up, down, down, up2], rtol=1e-6)  # and its size
    np.testing.assert_allclose(f[:, 2], np.log1p([0, 1, 2, 0, 1, 0]), rtol=1e-6)  # unchanged since
    assert f.shape == (6, 3) and f.dtype == np.float32


def test_tick_rule_knows_no_side_before_the_first_move():
    f = rows.matrix(plain([100, 100, 100, 101, 101]), TICK_RULE)
    np.testing.assert_array_equal(f[:2, :2], 0)  # no move yet: no sign, no size is invented
    np.testing.assert_allclose(f[:2, 2], math.log1p(LOOKBACK + 1), rtol=1e-6)  # and a full run
    np.testing.assert_allclose(f[2:, 0], [1, 1])
    np.testing.assert_allclose(f[2:, 1], [math.log(1.01)] * 2, rtol=1e-6)
    np.testing.assert_allclose(f[2:, 2], np.log1p([0, 1]), rtol=1e-6)


def test_a_move_further_back_than_the_lookback_reads_as_none():
    f = rows.matrix(plain([100, 101] + [101] * (LOOKBACK + 2)), TICK_RULE)
    assert len(f) == LOOKBACK + 3
    np.testing.assert_array_equal(f[:, 0], [1] * (LOOKBACK + 1) + [0, 0])
    np.testing.assert_allclose(f[:, 1], [math.log(1.01)] * (LOOKBACK + 1) + [0, 0], rtol=1e-6)
    runs = [*range(LOOKBACK + 1), LOOKBACK + 1, LOOKBACK + 1]
    np.testing.assert_allclose(f[:, 2], np.log1p(runs), rtol=1e-6)


def test_a_row_depends_on_lookback_rows_of_history_only():
    rng = np.random.default_rng(13)  # a quiet market: long runs of unchanged prices
    steps = rng.choice([-1, 0, 1], size=299, p=[0.05, 0.9, 0.05])
    ticks = TickArrays(np.arange(300.0), 100 + 0.01 * np.concatenate(([0], np.cumsum(steps))), np.ones(300))
    full = feature_matrix(ticks, FEATURES)
    for s in (0, 1, 37, 150, 250):
        np.testing.assert_array_equal(feature_matrix(ticks[s:], FEATURES)[LOOKBACK:], full[s + LOOKBACK :])
    sign = full[:, FEATURES.index("tick_sign")]
    assert (sign == 0).any() and (sign != 0).any()  # the cut-off is exercised, both ways


def test_columns_come_in_the_order_given():
    c = plain(PRICE)
    f = rows.matrix(c, FEATURES)
    for k, name in enumerate(FEATURES):
        np.testing.assert_array_equal(rows.matrix(c, (name,))[:, 0], f[:, k], err_msg=name)
    np.testing.assert_array_equal(rows.matrix(c, TICK_RULE[::-1]), rows.matrix(c, TICK_RULE)[:, ::-1])
    with pytest.raises(ValueError, match="at least 2 ticks"):
        feature_matrix(TickArrays(np.ones(1), np.ones(1), np.ones(1)), TICK_RULE)


def test_check_names_refuses_unknown_duplicate_and_empty():
    assert rows.check_names(["flat_run", "up"]) == ("flat_run", "up")
    with pytest.raises(ValueError, match=r"unknown feature column\(s\) \['nope'\]"):
        rows.check_names(["up", "nope"])
    with pytest.raises(ValueError, match="distinct"):
        rows.check_names(["up", "down", "up"])
    with pytest.raises(ValueError, match="not empty"):
        rows.check_names([])


# ---------------------------------------------------------------- event-only columns


def test_event_columns_hand_computed_and_refused_on_ticks():
    price = np.array([10.0, 12.0, 11.0])
    ev = rows.Columns(
        np.array([1.0, 2.0, 3.0]), price, np.ones(3), np.array([1, 3, 2]), np.array([10, 11.5, 11.2])
    )
    f = rows.matrix(ev, ("log_fills", "vwap_offset"))
    np.testing.assert_allclose(f[:, 0], np.log([3, 2]), rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], np.log([11.5 / 12, 11.2 / 11]), rtol=1e-6)
    for name in sorted(rows.EVENT_ONLY):
        with pytest.raises(ValueError, match="only for the event target"):
            rows.matrix(plain(PRICE), ("up", name))


def test_new_columns_are_scale_invariant(make_ticks):
    t = event_ticks(make_ticks, 400, 5)
    ev = merge_same_time(t.time, t.price, t.amount)
    a = event_columns(ev)
    b = rows.Columns(ev.time, ev.price * 1000.0, ev.amount, ev.fills, ev.vwap * 1000.0)
    fa, fb = rows.matrix(a, rows.NAMES), rows.matrix(b, rows.NAMES)
    for k, name in enumerate(rows.NAMES):
        if name in ("log_return", "last_move", "vwap_offset"):
            np.testing.assert_allclose(fa[:, k], fb[:, k], rtol=0, atol=1e-9, err_msg=name)
        else:
            np.testing.assert_array_equal(fa[:, k], fb[:, k], err_msg=name)
    assert 0.1 < (fa[:, rows.NAMES.index("flat_run")] > 0).mean() < 0.9  # runs of both kinds


def test_build_dataset_refuses_bad_names_and_targets(make_ticks):
    ticks = make_ticks(100)
    with pytest.raises(ValueError, match="unknown feature"):
        build_dataset(ticks, 8, names=("log_return", "nope"))
    with pytest.raises(ValueError, match="unknown target"):
        build_dataset(ticks, 8, target="order")
    with pytest.raises(ValueError, match="event target"):
        build_dataset(ticks, 8, names=EVENT_FEATURES)
    with pytest.raises(ValueError, match="no tick series"):
        build_dataset([], 8)


def test_prediction_path_builds_the_training_window_with_tick_rule_columns(make_ticks):
    ticks, L = make_ticks(120, seed=3), 5
    d = build_dataset(ticks, L)
    spec = WindowSpec(L, d.norm, FEATURES)
    assert spec.min_ticks == L + 1 + LOOKBACK and spec.first_full(ticks) == L + LOOKBACK
    for j in range(LOOKBACK, len(ticks) - L):  # the window starting at row j ends at tick j + L
        np.testing.assert_array_equal(spec.last_window(ticks[: j + L + 1]), d.windows[j].numpy())
    with pytest.raises(ValueError, match=rf"need at least {L + 1 + LOOKBACK} ticks"):
        spec.last_window(ticks[: L + LOOKBACK])
    first = spec.first_full(ticks)
    w = spec.windows_ending_at(ticks, first)
    np.testing.assert_array_equal(w, d.windows[first - L :].numpy())
    for k in (0, 1, len(w) - 1):
        np.testing.assert_array_equal(w[k], spec.last_window(ticks[: first + k + 1]))
    with pytest.raises(ValueError, match="windows can end"):
        spec.windows_ending_at(ticks, first - 1)


# ---------------------------------------------------------------- the event target


@pytest.mark.parametrize("horizon", [1, 2])
def test_event_dataset_has_one_window_per_run_of_events(horizon, make_ticks):
    t, L, k = event_ticks(make_ticks, 300, 21), 5, LOOKBACK
    ev = merge_same_time(t.time, t.price, t.amount)
    assert 40 < len(ev) < 0.8 * len(t)  # trades do share timestamps here
    d = build_dataset(t, L, horizon=horizon, target="event", names=EVENT_FEATURES)
    np.testing.assert_array_equal(d.raw, rows.matrix(event_columns(ev), EVENT_FEATURES))
    assert len(d.targets) == d.windows.shape[0] == len(ev) - L
    n = len(ev) - L - horizon - k
    j = k + np.arange(n)  # the window starting at row j ends at event j + L
    np.testing.assert_array_equal(d.targets[j].numpy(), ev.price[j + L + horizon] > ev.price[j + L])
    assert d.n_windows == n and not d.targets[:k].any() and not d.targets[k + n :].any()
    tr, va, _ = chronological_split(n, 0.6, 0.2, horizon)
    np.testing.assert_array_equal(d.split.train, k + np.arange(*tr))
    np.testing.assert_array_equal(d.split.val, k + np.arange(*va))


@pytest.mark.parametrize("names", [EVENT_FEATURES, EVENT_PLAIN])
def test_event_prediction_window_is_the_last_row_window_of_the_events(names, make_ticks):
    t, L = event_ticks(make_ticks, 300, 22), 5
    d = build_dataset(t, L, target="event", names=names)
    spec = WindowSpec(L, d.norm, names, "event")
    for end in (len(t), len(t) - 1, 150, spec.first_full(t) + 1):
        ev = merge_same_time(t.time[:end], t.price[:end], t.amount[:end])
        want = d.norm.apply(rows.matrix(event_columns(ev), names))[-L:]
        np.testing.assert_array_equal(spec.last_window(t[:end]), want)
    # ending on an event's last trade, it is the training window that ends at that event
    ev, first = merge_same_time(t.time, t.price, t.amount), L + rows.lookback(names)
    for e in (first, first + 1, len(ev) // 2, len(ev) - 1):
        np.testing.assert_array_equal(spec.last_window(t[: ev.last[e] + 1]), d.windows[e - L].numpy())


def test_event_windows_ending_at_equal_last_window_of_each_prefix(make_ticks):
    t, L = event_ticks(make_ticks, 120, 23), 4
    norm = Normalizer(np.zeros(len(EVENT_FEATURES), np.float32), np.ones(len(EVENT_FEATURES), np.float32))
    spec = WindowSpec(L, norm, EVENT_FEATURES, "event")
    first = spec.first_full(t)
    assert len(merge_same_time(t.time[:first], t.price[:first], t.amount[:first])) == spec.min_ticks - 1
    w = spec.windows_ending_at(t, first)
    assert w.shape == (len(t) - first, L, len(EVENT_FEATURES))
    for k in range(len(w)):
        np.testing.assert_array_equal(w[k], spec.last_window(t[: first + k + 1]))
    for bad in (first - 1, len(t)):
        with pytest.raises(ValueError, match="windows can end"):
            spec.windows_ending_at(t, bad)


def test_first_full_is_the_first_tick_that_ends_a_whole_window():
    # events start at ticks 0, 2, 5, 6, 8
    ticks = TickArrays(np.array([1, 1, 2, 2, 2, 3, 4, 4, 5.0]), 100 + np.arange(9.0), np.ones(9))
    norm = Normalizer(np.zeros(len(EVENT_PLAIN), np.float32), np.ones(len(EVENT_PLAIN), np.float32))

    def spec(seq_len: int, target: str = "event") -> WindowSpec:
        return WindowSpec(seq_len, norm, EVENT_PLAIN, target)

    assert [spec(L).first_full(ticks) for L in (1, 2, 3, 4, 5)] == [2, 5, 6, 8, 9]  # 9: none does
    assert spec(2, "tick").first_full(ticks) == 2
    assert WindowSpec(2, norm, FEATURES).first_full(ticks) == 2 + LOOKBACK  # the tick rule's history
    assert WindowSpec(2, norm, EVENT_FEATURES, "event").first_full(ticks) == 9  # 5 events: too few
    assert spec(2).last_window(ticks[:6]).shape == (2, len(EVENT_PLAIN))  # 3 events, the last of one fill
    with pytest.raises(ValueError, match=r"need at least 3 events.*got 2 from 5 ticks"):
        spec(2).last_window(ticks[:5])
