"""Features: hand-computed values, scale invariance, targets, strided windows, alignment,
no leakage of later ticks into the normalisation, chronological split, prediction input."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from app.market.ticks import TickArrays
from app.ml import features
from app.ml.features import (
    FEATURES,
    LEGACY_FEATURES,
    Normalizer,
    WindowSpec,
    build_dataset,
    chronological_split,
    feature_matrix,
    last_window,
    rise_targets,
    windows,
    windows_ending_at,
)
from app.ml.rows import LOOKBACK, lookback

# ---------------------------------------------------------------- hand-computed example

# tick:      0      1      2      3      4
TIME = [10.0, 11.0, 13.0, 13.0, 20.0]
PRICE = [100.0, 101.0, 101.0, 100.0, 102.0]
AMOUNT = [1.0, 0.5, 2.0, 0.0, 3.0]
RETURNS = ("log_return", "last_move")  # the columns that are log returns (scale-free up to rounding)


def hand_ticks() -> TickArrays:
    return TickArrays(np.array(TIME), np.array(PRICE), np.array(AMOUNT))


def test_feature_matrix_hand_computed():
    f = feature_matrix(hand_ticks(), LEGACY_FEATURES)
    # row r describes tick r + 1: the move into it from tick r
    expected = np.array(
        [
            # log return           log1p amount     log1p gap      up down flat
            [math.log(101 / 100), math.log1p(0.5), math.log1p(1.0), 1, 0, 0],
            [0.0, math.log1p(2.0), math.log1p(2.0), 0, 0, 1],
            [math.log(100 / 101), math.log1p(0.0), math.log1p(0.0), 0, 1, 0],
            [math.log(102 / 100), math.log1p(3.0), math.log1p(7.0), 1, 0, 0],
        ],
        dtype=np.float64,
    )
    assert f.shape == (4, len(LEGACY_FEATURES))
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, expected, rtol=1e-6, atol=1e-7)
    # the flags are exact and exactly one is set per row
    np.testing.assert_array_equal(f[:, 3:].sum(axis=1), np.ones(4))
    # the default columns compute the same values under the same names
    g = feature_matrix(hand_ticks())
    for k, name in enumerate(LEGACY_FEATURES):
        np.testing.assert_array_equal(g[:, FEATURES.index(name)], f[:, k])


def test_features_are_scale_invariant(synth_ticks):
    t = synth_ticks[:3000]
    scaled = TickArrays(t.time, t.price * 1000.0, t.amount)
    a, b = feature_matrix(t), feature_matrix(scaled)
    for k, name in enumerate(FEATURES):
        if name in RETURNS:
            np.testing.assert_allclose(a[:, k], b[:, k], rtol=0, atol=1e-9, err_msg=name)
        else:  # amounts, gaps, flags, signs and runs: exact
            np.testing.assert_array_equal(a[:, k], b[:, k], err_msg=name)
    # and so are the standardised windows a model sees, and the targets
    da, db = build_dataset(t, 8), build_dataset(scaled, 8)
    np.testing.assert_allclose(da.rows.numpy(), db.rows.numpy(), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(da.targets.numpy(), db.targets.numpy())


def test_flat_moves_are_seen_directly(synth_ticks):
    f = feature_matrix(synth_ticks)
    dp = np.diff(synth_ticks.price)
    np.testing.assert_array_equal(f[:, FEATURES.index("up")], (dp > 0).astype(np.float32))
    np.testing.assert_array_equal(f[:, FEATURES.index("down")], (dp < 0).astype(np.float32))
    np.testing.assert_array_equal(f[:, FEATURES.index("flat")], (dp == 0).astype(np.float32))
    assert 0.1 < f[:, FEATURES.index("flat")].mean() < 0.9  # the market has both kinds


# ---------------------------------------------------------------- targets


def test_rise_targets_strict_next_tick():
    y = rise_targets(np.array(PRICE))
    # 100->101 rises, 101->101 does not (strict), 101->100 falls, 100->102 rises
    np.testing.assert_array_equal(y, [1, 0, 0, 1])
    assert y.dtype == np.float32


def test_rise_targets_horizon():
    p = np.array(PRICE)
    # 101 > 100, 100 > 101, 102 > 101
    np.testing.assert_array_equal(rise_targets(p, horizon=2), [1, 0, 1])
    np.testing.assert_array_equal(rise_targets(p, horizon=4), [1])
    for h in (1, 2, 3):
        y = rise_targets(p, horizon=h)
        assert len(y) == len(p) - h
        np.testing.assert_array_equal(y, [float(p[i + h] > p[i]) for i in range(len(p) - h)])


@pytest.mark.parametrize("h", [0, -1])
def test_rise_targets_bad_horizon(h):
    with pytest.raises(ValueError, match="horizon"):
        rise_targets(np.array(PRICE), horizon=h)


# ---------------------------------------------------------------- windows


def test_windows_are_a_strided_view_with_the_right_contents():
    rows = torch.arange(7 * 3, dtype=torch.float32).reshape(7, 3)
    w = windows(rows, 4)
    assert w.shape == (4, 4, 3)
    assert w.untyped_storage().data_ptr() == rows.untyped_storage().data_ptr()
    for j in range(4):
        torch.testing.assert_close(w[j], rows[j : j + 4])
    rows[5, 1] = -1.0  # writing the base shows through every window that covers row 5
    assert w[2, 3, 1] == -1 and w[3, 2, 1] == -1
    assert (w[1] != -1).all()


def test_windows_bad_lengths():
    rows = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="sequence length"):
        windows(rows, 0)
    with pytest.raises(ValueError, match="at least 6"):
        windows(rows, 6)
    assert windows(rows, 5).shape == (1, 5, 2)


def test_dataset_windows_are_views_of_the_rows(make_ticks):
    d = build_dataset(make_ticks(200), 10)
    assert d.windows.untyped_storage().data_ptr() == d.rows.untyped_storage().data_ptr()


@pytest.mark.parametrize("seq_len,horizon", [(1, 1), (5, 1), (7, 3)])
@pytest.mark.parametrize("names", [LEGACY_FEATURES, FEATURES])
def test_window_target_alignment_brute_force(seq_len, horizon, names, make_ticks):
    ticks = make_ticks(120, seed=3)
    d = build_dataset(ticks, seq_len, horizon=horizon, names=names)
    rows = d.norm.apply(feature_matrix(ticks, names))
    k = lookback(names)  # windows start after the rows their columns look back on
    n_windows = len(ticks) - seq_len - horizon - k  # windows whose target is known
    assert d.names == names and d.raw.shape == (len(ticks) - 1, len(names)) and d.n_windows == n_windows
    assert len(d.targets) == d.windows.shape[0] == len(ticks) - seq_len  # one per start row
    assert d.windows.shape[1:] == (seq_len, len(names))
    assert not d.targets[:k].any() and not d.targets[k + n_windows :].any()  # no window starts there
    starts = np.concatenate([d.split.train, d.split.val, d.split.test])
    assert starts.min() >= k and starts.max() < k + n_windows
    p = ticks.price
    for j in range(k, k + n_windows):
        end = j + seq_len  # window j ends at tick j + L ...
        np.testing.assert_array_equal(d.windows[j].numpy(), rows[j : j + seq_len])
        # ... and its target is the move after it
        assert d.targets[j].item() == float(p[end + horizon] > p[end])
    np.testing.assert_array_equal(
        d.y(starts), [float(p[j + seq_len + horizon] > p[j + seq_len]) for j in starts]
    )


@pytest.mark.parametrize("seq_len", [1, 5])
def test_legacy_prediction_path_builds_the_training_window(seq_len, make_ticks):
    ticks = make_ticks(120, seed=3)
    d = build_dataset(ticks, seq_len, names=LEGACY_FEATURES)
    spec = WindowSpec(seq_len, d.norm)
    assert spec.names == LEGACY_FEATURES and spec.target == "tick"
    for j in range(len(ticks) - seq_len):
        end = j + seq_len
        # the last row is the move from tick end - 1 into tick `end` ...
        move_in = d.norm.apply(feature_matrix(ticks[end - 1 : end + 1], LEGACY_FEATURES))[0]
        np.testing.assert_allclose(d.windows[j, -1].numpy(), move_in, rtol=1e-6, atol=1e-6)
        # ... and the prediction path builds the very same window from the ticks up to `end`
        lw = last_window(ticks[: end + 1], seq_len, d.norm)
        np.testing.assert_array_equal(lw, d.windows[j].numpy())
        np.testing.assert_array_equal(spec.last_window(ticks[: end + 1]), lw)


# ---------------------------------------------------------------- normalisation without leakage


def test_normalisation_fitted_on_training_rows_only(make_ticks):
    ticks = make_ticks(1000, seed=5)
    L = 16
    d = build_dataset(ticks, L, train=0.6, val=0.2)
    raw = feature_matrix(ticks)
    np.testing.assert_array_equal(d.raw, raw)
    # the rows the training windows cover, nothing later (nor the history before the first)
    expected = Normalizer.fit(raw[d.split.train[0] : d.split.train[-1] + L])
    np.testing.assert_allclose(d.norm.mean, expected.mean, rtol=1e-6)
    np.testing.assert_allclose(d.norm.std, expected.std, rtol=1e-6)
    assert not np.allclose(d.norm.mean, Normalizer.fit(raw).mean, rtol=1e-6)  # the check can fail


def test_changing_later_ticks_does_not_change_norm_or_training_data(make_ticks):
    ticks = make_ticks(1000, seed=6)
    L = 16
    d = build_dataset(ticks, L)
    cut = d.split.val[0] + L  # the first validation window ends at this tick
    rng = np.random.default_rng(0)
    k = len(ticks) - cut
    later = TickArrays(
        np.concatenate((ticks.time[:cut], ticks.time[cut - 1] + np.cumsum(rng.exponential(50, k)))),
        np.concatenate((ticks.price[:cut], ticks.price[cut - 1] * np.exp(rng.normal(0, 0.05, k)))),
        np.concatenate((ticks.amount[:cut], rng.lognormal(3, 2, k))),
    )
    d2 = build_dataset(later, L)
    for name in ("train", "val", "test"):
        np.testing.assert_array_equal(d2.split.part(name), d.split.part(name))
    np.testing.assert_array_equal(d2.norm.mean, d.norm.mean)
    np.testing.assert_array_equal(d2.norm.std, d.norm.std)
    tr = torch.from_numpy(d.split.train)
    np.testing.assert_array_equal(d2.windows[tr].numpy(), d.windows[tr].numpy())
    np.testing.assert_array_equal(d2.y(d.split.train), d.y(d.split.train))
    # while changing a training tick does change the statistics (the check above can fail)
    early = TickArrays(ticks.time, ticks.price.copy(), ticks.amount.copy())
    early.amount[d.split.train[0] + 5] = 1e6
    assert not np.array_equal(build_dataset(early, L).norm.mean, d.norm.mean)


def test_given_norm_is_reused(make_ticks):
    ticks = make_ticks(500, seed=7)
    norm = Normalizer(np.zeros(len(FEATURES), np.float32), np.ones(len(FEATURES), np.float32))
    d = build_dataset(ticks, 8, norm=norm)
    assert d.norm is norm
    np.testing.assert_allclose(d.rows.numpy(), np.clip(feature_matrix(ticks), -10, 10))


def test_normalizer_roundtrip_constant_feature_and_clip():
    rows = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]], dtype=np.float32)
    n = Normalizer.fit(rows)
    np.testing.assert_allclose(n.mean, [3.0, 5.0])
    np.testing.assert_allclose(n.std, [math.sqrt(8 / 3), 1.0])  # a constant column keeps std 1
    z = n.apply(rows)
    assert np.isfinite(z).all() and np.allclose(z[:, 1], 0)
    assert n.apply(np.array([[1e9, 5.0]], np.float32))[0, 0] == features.CLIP_SIGMAS
    m = Normalizer.from_dict(n.to_dict())
    np.testing.assert_array_equal(m.mean, n.mean)
    np.testing.assert_array_equal(m.std, n.std)
    with pytest.raises(ValueError, match="zero rows"):
        Normalizer.fit(rows[:0])


# ---------------------------------------------------------------- chronological split


def test_split_exact_ranges():
    # window 59 is purged: its target is the move into validation
    assert chronological_split(100, 0.6, 0.2) == ((0, 59), (60, 79), (80, 100))
    assert chronological_split(100, 0.8, 0.2) == ((0, 79), (80, 100), ())
    assert chronological_split(100, 0.6, 0.2, horizon=3) == ((0, 57), (60, 77), (80, 100))


@pytest.mark.parametrize("n", [50, 101, 1000, 4321])
@pytest.mark.parametrize("train,val", [(0.6, 0.2), (0.5, 0.3), (0.8, 0.2), (0.7, 0.1)])
@pytest.mark.parametrize("horizon", [1, 3])
def test_split_order_and_purge(n, train, val, horizon):
    tr, va, te = chronological_split(n, train, val, horizon)
    parts = [tr, va] + ([te] if te else [])
    assert tr[0] == 0
    for (a, b), (c, d) in zip(parts, parts[1:], strict=False):
        assert a < b <= c < d  # ordered, non-empty, no overlap
        # a window's target looks `horizon` ticks past its end: the last one of a split must
        # not reach the first window of the next split
        assert (b - 1) + horizon < c + 1
    assert parts[-1][1] <= n


@pytest.mark.parametrize("horizon", [1, 3])
def test_dataset_split_lists_contiguous_ordered_purged_starts(horizon, make_ticks):
    # 100 windows with a target, after the rows the tick rule looks back on
    d = build_dataset(make_ticks(100 + 8 + horizon + LOOKBACK), 8, horizon=horizon)
    parts = [d.split.part(name) for name in ("train", "val", "test")]
    for p, (lo, hi) in zip(parts, chronological_split(100, 0.6, 0.2, horizon), strict=True):
        np.testing.assert_array_equal(p, LOOKBACK + np.arange(lo, hi))  # contiguous, ordered, exact
        assert p.dtype == np.int64
    for before, after in zip(parts, parts[1:], strict=False):
        assert before[-1] + horizon < after[0]  # the last target stops short of the next part
    d = build_dataset(make_ticks(100 + 8 + 1), 8, train=0.8, val=0.2, names=LEGACY_FEATURES)
    assert d.split.train[0] == 0  # the legacy columns read no history
    assert d.split.test is None and d.n_series == 1
    with pytest.raises(ValueError, match="no test split"):
        d.split.part("test")


@pytest.mark.parametrize("train,val", [(0, 0.2), (1.0, 0.2), (0.6, 0), (0.7, 0.4), (-0.1, 0.5)])
def test_split_bad_fractions(train, val):
    with pytest.raises(ValueError, match="fractions"):
        chronological_split(100, train, val)


def test_split_too_few_windows():
    with pytest.raises(ValueError, match="train split is empty"):
        chronological_split(1, 0.6, 0.2)
    with pytest.raises(ValueError, match="split is empty"):
        chronological_split(4, 0.6, 0.2)


def test_build_dataset_too_few_ticks_says_so(make_ticks):
    with pytest.raises(ValueError, match="ticks"):
        build_dataset(make_ticks(20), 16)


# ---------------------------------------------------------------- prediction input


def test_last_window_needs_seq_len_plus_one_ticks(make_ticks):
    ticks = make_ticks(50, seed=8)
    norm = build_dataset(ticks, 10, names=LEGACY_FEATURES).norm
    assert features.min_ticks(10) == 11 == WindowSpec(10, norm).min_ticks
    assert WindowSpec(10, norm).first_full(ticks) == 10
    w = last_window(ticks[:11], 10, norm)
    assert w.shape == (10, len(LEGACY_FEATURES)) and w.dtype == np.float32
    with pytest.raises(ValueError, match=r"need at least 11 ticks.*got 10"):
        last_window(ticks[:10], 10, norm)


def test_last_window_uses_only_the_last_ticks(make_ticks):
    ticks = make_ticks(50, seed=9)
    norm = build_dataset(ticks, 10, names=LEGACY_FEATURES).norm
    full = last_window(ticks, 10, norm)
    np.testing.assert_array_equal(full, last_window(ticks[-11:], 10, norm))
    np.testing.assert_array_equal(full, norm.apply(feature_matrix(ticks, LEGACY_FEATURES))[-10:])


def test_windows_ending_at_equal_last_window_of_each_prefix(make_ticks):
    ticks = make_ticks(300, seed=4)
    norm = Normalizer.fit(feature_matrix(ticks, LEGACY_FEATURES))
    w = windows_ending_at(ticks, 10, norm, 200)
    assert w.shape == (100, 10, len(LEGACY_FEATURES)) and w.flags.c_contiguous
    for k in (0, 1, 57, 99):
        np.testing.assert_array_equal(w[k], last_window(ticks[: 200 + k + 1], 10, norm))
    np.testing.assert_array_equal(WindowSpec(10, norm).windows_ending_at(ticks, 200), w)
    assert windows_ending_at(ticks, 10, norm, 10).shape[0] == 290
    one = windows_ending_at(ticks, 10, norm, 299)  # a single window is still a writable copy
    assert one.shape == (1, 10, len(LEGACY_FEATURES)) and one.flags.writeable and one.flags.c_contiguous
    for bad in (9, 300):
        with pytest.raises(ValueError, match="windows can end"):
            windows_ending_at(ticks, 10, norm, bad)


# ---------------------------------------------------------------- several series, whole


def _two_series(make_ticks: Callable[..., TickArrays]) -> tuple[TickArrays, TickArrays]:
    return make_ticks(150, seed=11), make_ticks(90, seed=12, start_price=5.0)


def test_several_series_split_each_on_its_own_and_never_cross(make_ticks):
    L, h, series = 6, 2, _two_series(make_ticks)
    d = build_dataset(series, L, horizon=h)
    bounds = np.array([0, 149, 149 + 89])  # each series' rows lie back to back
    assert d.n_series == 2 and d.rows.shape[0] == bounds[-1]
    expected: list[list[np.ndarray]] = [[], [], []]
    norm_rows = []
    for s, off in zip(series, bounds, strict=False):
        n_windows, at = len(s) - L - h - LOOKBACK, off + LOOKBACK  # after the series' own history
        ranges = chronological_split(n_windows, 0.6, 0.2, h)
        for k, (lo, hi) in enumerate(ranges):
            expected[k].append(np.arange(lo, hi) + at)  # the series' own split, train first
        j = LOOKBACK + np.arange(n_windows)  # window starts (rows) within the series
        np.testing.assert_array_equal(d.targets[off + j].numpy(), s.price[j + L + h] > s.price[j + L])
        assert not d.targets[off:at].any() and not d.targets[at + n_windows : off + len(s) - 1].any()
        norm_rows.append(feature_matrix(s)[LOOKBACK : LOOKBACK + ranges[0][1] + L - 1])
    for name, want in zip(("train", "val", "test"), expected, strict=True):
        starts = d.split.part(name)
        np.testing.assert_array_equal(starts, np.concatenate(want))
        inside = np.searchsorted(bounds, starts, side="right") - 1
        # all L rows, and the history they read, within one series
        assert (starts - LOOKBACK >= bounds[inside]).all() and (starts + L <= bounds[inside + 1]).all()
    np.testing.assert_array_equal(d.raw, np.concatenate([feature_matrix(s) for s in series]))
    fitted = Normalizer.fit(np.concatenate(norm_rows))  # the training rows of both series
    np.testing.assert_allclose(d.norm.mean, fitted.mean, rtol=1e-6)
    np.testing.assert_allclose(d.norm.std, fitted.std, rtol=1e-6)
    np.testing.assert_allclose(d.rows.numpy(), d.norm.apply(d.raw))


def test_whole_scores_every_window_with_the_given_norm(make_ticks):
    L, series = 6, _two_series(make_ticks)
    norm = build_dataset(series, L).norm
    d = build_dataset(series, L, norm=norm, whole=True)
    assert d.norm is norm and len(d.split.train) == len(d.split.val) == 0
    k = LOOKBACK
    expected = np.concatenate([k + np.arange(150 - L - 1 - k), 149 + k + np.arange(90 - L - 1 - k)])
    np.testing.assert_array_equal(d.split.part("test"), expected)
    with pytest.raises(ValueError, match="no train split"):
        d.split.part("train")
    with pytest.raises(ValueError, match="normalisation"):
        build_dataset(series[0], L, whole=True)
