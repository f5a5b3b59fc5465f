"""Metrics against brute force and hand values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.ml import metrics


def brute_auc(y, p) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos = [s for s, t in zip(p, y, strict=True) if t == 1]
    neg = [s for s, t in zip(p, y, strict=True) if t == 0]
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(6))
def test_auc_matches_pairwise_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 80))
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1  # both classes present
    p = rng.integers(0, 5, n) / 4.0  # few distinct values: many ties, also across classes
    assert metrics.roc_auc(y, p) == pytest.approx(brute_auc(y, p), abs=1e-12)
    q = rng.random(n)  # no ties
    assert metrics.roc_auc(y, q) == pytest.approx(brute_auc(y, q), abs=1e-12)


def test_auc_hand_example():
    # positives score 0.8 and 0.4; negatives 0.4 and 0.1: pairs win, tie, win, win -> 3.5 / 4
    assert metrics.roc_auc([1, 0, 1, 0], [0.8, 0.4, 0.4, 0.1]) == pytest.approx(0.875)


def test_auc_perfect_inverted_constant():
    y = np.array([0, 0, 1, 1, 0, 1])
    p = np.array([0.1, 0.2, 0.7, 0.9, 0.3, 0.8])
    assert metrics.roc_auc(y, p) == 1.0
    assert metrics.roc_auc(y, 1 - p) == 0.0
    assert metrics.roc_auc(y, np.full(6, 0.3)) == 0.5
    # only the ranking matters
    assert metrics.roc_auc(y, np.log(p)) == 1.0


def test_auc_one_class_is_nan():
    assert math.isnan(metrics.roc_auc([1, 1, 1], [0.1, 0.5, 0.9]))
    assert math.isnan(metrics.roc_auc([0, 0], [0.1, 0.5]))


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="differ in length"):
        metrics.brier([0, 1], [0.5])


def test_brier_hand_values():
    assert metrics.brier([1, 0], [0.8, 0.3]) == pytest.approx((0.2**2 + 0.3**2) / 2)
    assert metrics.brier([1, 0, 1], [1, 0, 1]) == 0.0
    assert metrics.brier([1, 0], [0, 1]) == 1.0


def test_log_loss_hand_values():
    expected = -(math.log(0.8) + math.log(1 - 0.3)) / 2
    assert metrics.log_loss([1, 0], [0.8, 0.3]) == pytest.approx(expected)
    assert metrics.log_loss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
    # certain and wrong is large but finite (clipped), certain and right is ~0
    assert 10 < metrics.log_loss([1], [0.0]) < 20
    assert metrics.log_loss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-6)


def test_ppv_npv_hand_example():
    y = np.array([1, 1, 0, 0, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.7, 0.2, 0.1, 0.3, 0.5])
    # threshold 0.5: calls rise at 0.9 (tp), 0.6 (tp), 0.7 (fp), 0.5 (fp) -> ppv 2/4;
    # calls no rise at 0.2 (tn), 0.1 (fn), 0.3 (tn) -> npv 2/3
    ppv, npv = metrics.ppv_npv(y, p, 0.5)
    assert ppv == pytest.approx(0.5)
    assert npv == pytest.approx(2 / 3)
    # threshold 0.65: rise at 0.9 (tp), 0.7 (fp) -> 1/2; no rise at 0.6 (fn), 0.2, 0.3, 0.5 (tn),
    # 0.1 (fn) -> 3/5
    ppv, npv = metrics.ppv_npv(y, p, 0.65)
    assert ppv == pytest.approx(1 / 2)
    assert npv == pytest.approx(3 / 5)


def test_ppv_npv_nan_when_a_side_is_never_called():
    ppv, npv = metrics.ppv_npv([1, 0], [0.9, 0.8], 0.5)
    assert ppv == 0.5 and math.isnan(npv)
    ppv, npv = metrics.ppv_npv([1, 0], [0.1, 0.2], 0.5)
    assert math.isnan(ppv) and npv == 0.5


def test_report_keys_and_values():
    y = np.array([1, 0, 0, 1, 0])
    p = np.array([0.7, 0.2, 0.6, 0.4, 0.1])
    r = metrics.report(y, p, threshold=0.5)
    assert set(r) == {
        "n",
        "base_rate",
        "auc",
        "brier",
        "log_loss",
        "base_brier",
        "base_log_loss",
        "accuracy",
        "ppv",
        "npv",
        "threshold",
    }
    assert all(isinstance(v, float) for v in r.values())  # plain floats: checkpoint/JSON safe
    assert r["n"] == 5 and r["threshold"] == 0.5
    assert r["base_rate"] == pytest.approx(0.4)
    assert r["auc"] == pytest.approx(brute_auc(y, p))
    assert r["brier"] == pytest.approx(metrics.brier(y, p))
    assert r["log_loss"] == pytest.approx(metrics.log_loss(y, p))
    assert r["base_brier"] == pytest.approx(0.4 * 0.6)  # a constant base-rate forecast
    assert r["base_log_loss"] == pytest.approx(-(0.4 * math.log(0.4) + 0.6 * math.log(0.6)))
    # 0.7 right, 0.2 right, 0.6 wrong, 0.4 wrong, 0.1 right
    assert r["accuracy"] == pytest.approx(3 / 5)
    assert (r["ppv"], r["npv"]) == pytest.approx(metrics.ppv_npv(y, p, 0.5))


def test_report_rejects_empty():
    with pytest.raises(ValueError, match="no samples"):
        metrics.report(np.array([]), np.array([]))


def test_every_monitor_has_a_direction():
    assert metrics.HIGHER_IS_BETTER["auc"] is True
    assert metrics.HIGHER_IS_BETTER["brier"] is False
    assert metrics.HIGHER_IS_BETTER["log_loss"] is False
