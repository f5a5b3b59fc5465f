"""The tree baseline: scikit-learn's own numbers, its input columns, and the issue's Bitstamp figure."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from app.ml import tree
from app.ml.metrics import roc_auc

REAL_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "bitstamp_btcusd_2018-08.csv"
L = 8


def _windows(rows: np.ndarray, seq_len: int) -> np.ndarray:
    """(N, L, C) windows of consecutive rows; window k covers rows k .. k + L - 1."""
    view = np.lib.stride_tricks.sliding_window_view(rows, seq_len, axis=0)  # (N, C, L)
    return np.ascontiguousarray(view.transpose(0, 2, 1))


def _synthetic(n: int = 700, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Windows of a random walk with bid-ask bounce, and whether the price rose after each."""
    rng = np.random.default_rng(seed)
    price = 100.0 + np.cumsum(rng.choice([-0.01, 0.0, 0.01], size=n + L + 1, p=[0.3, 0.4, 0.3]))
    time = np.cumsum(rng.exponential(2.0, size=price.size))
    amount = rng.exponential(0.5, size=price.size)
    x = _windows(tree.tree_rows(time, price, amount), L)[: price.size - L - 1]  # window k ends at tick k + L
    y = (price[L + 1 :] > price[L:-1]).astype(np.float64)[: len(x)]
    return x, y


def test_tree_rows_on_a_hand_example() -> None:
    time = np.array([10.0, 12.0, 11.0, 15.0])
    price = np.array([100.0, 101.0, 101.0, 99.0])
    amount = np.array([9.0, 1.0, 0.0, 3.0])
    rows = tree.tree_rows(time, price, amount)
    assert rows.dtype == np.float64 and rows.shape == (3, len(tree.TREE_COLUMNS))
    want = np.array(
        [
            [np.log(101 / 100), np.log(2.0), 0.0, np.log(3.0)],
            [0.0, 0.0, 1.0, 0.0],  # the gap back in time clips at 0
            [np.log(99 / 101), np.log(4.0), 0.0, np.log(5.0)],
        ]
    )
    np.testing.assert_allclose(rows, want, rtol=1e-15, atol=1e-15)
    assert tree.tree_rows(time[:1], price[:1], amount[:1]).shape == (0, 4)
    with pytest.raises(ValueError, match="differ in length"):
        tree.tree_rows(time, price[:3], amount)


def test_probabilities_equal_scikit_learn_run_directly() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    x, y = _synthetic()
    x_train, y_train, x_eval = x[:500], y[:500], x[500:]
    direct = HistGradientBoostingClassifier(
        max_iter=200, learning_rate=0.05, early_stopping=False, random_state=0
    ).fit(x_train.reshape(500, -1), y_train)
    want = direct.predict_proba(x_eval.reshape(len(x_eval), -1))[:, 1]

    got = tree.fit_predict(x_train, y_train, x_eval)
    assert got.dtype == np.float64 and got.shape == (len(x_eval),)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert np.ptp(got) > 0.1  # the fit learned something, not a constant


def test_a_list_of_eval_splits_is_scored_by_one_fit() -> None:
    x, y = _synthetic()
    flat = x.reshape(len(x), -1)
    one = tree.fit_predict(x[:500], y[:500], x[500:])
    parts = tree.fit_predict(flat[:500], y[:500], [flat[500:600], flat[600:], flat[:0]])
    assert [len(p) for p in parts] == [100, len(x) - 600, 0]
    np.testing.assert_array_equal(np.concatenate(parts), one)  # (N, L, 4) is a plain reshape of (N, L*4)


def test_bad_inputs_are_refused_with_a_reason() -> None:
    x, y = _synthetic(n=60)
    with pytest.raises(ValueError, match="one class"):
        tree.fit_predict(x, np.zeros(len(x)), x)
    with pytest.raises(ValueError, match="0 \\(no rise\\) or 1"):
        tree.fit_predict(x, y * 2, x)
    with pytest.raises(ValueError, match="targets"):
        tree.fit_predict(x, y[:-1], x)
    with pytest.raises(ValueError, match="columns"):
        tree.fit_predict(x, y, x[:, 1:])
    with pytest.raises(ValueError, match="shape"):
        tree.fit_predict(x[0, 0], y, x)


def test_without_scikit_learn_the_error_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    assert tree.available()
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)
    assert not tree.available()
    x, y = _synthetic(n=60)
    with pytest.raises(tree.TreeUnavailable) as info:
        tree.fit_predict(x, y, x)
    assert str(info.value) == (
        "scikit-learn is not installed: pip install 'tickcast[eval]' (scripts/dev.sh setup installs it)"
    )


@pytest.mark.skipif(not REAL_CSV.exists(), reason=f"real Bitstamp ticks not present at {REAL_CSV}")
@pytest.mark.real_data
def test_the_issue_figure_on_the_bitstamp_file() -> None:
    """Issue 13's protocol: learn from windows whose target tick is in the first 80%, score the rest."""
    from app.market.ticks import read_csv

    ticks = read_csv(REAL_CSV)
    price = np.asarray(ticks.price, dtype=np.float64)
    n, seq_len = len(price), 32
    x = _windows(tree.tree_rows(ticks.time, price, ticks.amount), seq_len)[: n - seq_len - 1]
    end = np.arange(len(x)) + seq_len  # window k ends at tick k + L; its target is tick k + L + 1
    y = (price[end + 1] > price[end]).astype(np.float64)
    cut = int(0.8 * n)
    train, test = end + 1 < cut, end >= cut
    assert int(test.sum()) == 20_517
    p = tree.fit_predict(x[train], y[train], x[test])
    assert roc_auc(y[test], p) == pytest.approx(0.6335, abs=0.002)
