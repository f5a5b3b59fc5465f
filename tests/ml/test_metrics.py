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
        "ece",
        "coverage",
        "top_decile_p",
        "top_decile_observed",
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
    # bins: 0.1 -> [0.1, 0.2) alone (y 0); 0.2 (y 0); 0.4 (y 1); 0.6 (y 0); 0.7 (y 1)
    assert r["ece"] == pytest.approx((0.1 + 0.2 + 0.6 + 0.6 + 0.3) / 5)
    assert r["coverage"] == pytest.approx(2 / 5)  # 0.7 and 0.6 are called rises
    assert (r["top_decile_p"], r["top_decile_observed"]) == (0.7, 1.0)  # ceil(5 / 10) = 1 window


def test_report_rejects_empty():
    with pytest.raises(ValueError, match="no samples"):
        metrics.report(np.array([]), np.array([]))


def test_every_monitor_has_a_direction():
    assert metrics.HIGHER_IS_BETTER["auc"] is True
    assert metrics.HIGHER_IS_BETTER["brier"] is False
    assert metrics.HIGHER_IS_BETTER["log_loss"] is False


def test_ece_hand_example():
    # bin 0: 0.05 vs 1; bin 1: 0.15 vs 0; bin 9: 0.95 and 1.0 (the last bin is closed) vs 1, 1
    y, p = [1, 0, 1, 1], [0.05, 0.15, 0.95, 1.0]
    assert metrics.ece(y, p) == pytest.approx((0.95 + 0.15 + 2 * 0.025) / 4)
    # two bins: [0, 0.5) holds 0.05 and 0.15, [0.5, 1] the rest
    assert metrics.ece(y, p, bins=2) == pytest.approx((2 * abs(0.1 - 0.5) + 2 * 0.025) / 4)


def test_ece_small_when_calibrated_large_when_shifted():
    rng = np.random.default_rng(0)
    p = rng.random(50_000)
    y = (rng.random(p.size) < p).astype(float)
    assert metrics.ece(y, p) < 0.01
    shifted = np.clip(p + 0.2, 0, 1)
    assert metrics.ece(y, shifted) > 0.15


def test_ece_rejects_empty():
    with pytest.raises(ValueError, match="no samples"):
        metrics.ece([], [])


def test_reliability_bins_edges_and_counts():
    rng = np.random.default_rng(1)
    p = rng.random(997)
    y = rng.integers(0, 2, p.size)
    table = metrics.reliability(y, p)
    assert len(table) == 10 and sum(b.count for b in table) == p.size
    assert [(b.lo, b.hi) for b in table] == [(k / 10, (k + 1) / 10) for k in range(10)]
    for b in table:
        inside = (p >= b.lo) & ((p < b.hi) | (b.hi == 1.0))
        assert b.count == int(inside.sum())
        assert b.mean_p == pytest.approx(p[inside].mean()) and b.observed == pytest.approx(y[inside].mean())
    # edges go to the bin above, 1.0 to the last; an empty bin has NaN means
    edges = metrics.reliability([0, 1, 1, 0], [0.1, 0.3, 0.7, 1.0])
    assert [b.count for b in edges] == [0, 1, 0, 1, 0, 0, 0, 1, 0, 1]
    assert math.isnan(edges[0].mean_p) and math.isnan(edges[0].observed)


def test_format_reliability_is_a_markdown_table():
    text = metrics.format_reliability(metrics.reliability([1, 0, 1], [0.05, 0.55, 1.0], bins=4))
    lines = text.splitlines()
    assert len(lines) == 2 + 4
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "bin",
        "mean predicted",
        "observed",
        "count",
    ]
    assert set(lines[1]) <= set("|-: ")
    assert all(line.startswith("| ") and line.endswith(" |") for line in lines)
    assert len({len(line) for line in lines}) == 1  # aligned for a terminal too
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == ["[0.00, 0.25)", "0.050", "1.000", "1"]
    assert cells[1] == ["[0.25, 0.50)", "n/a", "n/a", "0"]
    assert cells[3] == ["[0.75, 1.00]", "1.000", "1.000", "1"]


def test_top_decile_hand_example():
    # 12 windows -> the top ceil(1.2) = 2; three tie at 0.9 and the stable sort keeps the first two
    p = [0.3, 0.9, 0.2, 0.8, 0.9, 0.1, 0.4, 0.9, 0.6, 0.7, 0.05, 0.15]
    y = [0, 1, 0, 1, 0, 0, 0, 1, 1, 1, 0, 0]
    assert metrics.top_decile(y, p) == (0.9, 0.5)
    assert metrics.top_decile([1, 0, 0], [0.2, 0.6, 0.4]) == (0.6, 0.0)
    with pytest.raises(ValueError, match="no samples"):
        metrics.top_decile([], [])


def brute_candidates(y, p):
    """Each distinct forecast, highest first, with the F1 and PPV of calling a rise at p >= it."""
    y, p = np.asarray(y), np.asarray(p)
    out = []
    for t in sorted(set(p.tolist()), reverse=True):
        call = p >= t
        tp = int((call & (y == 1)).sum())
        out.append((t, 2 * tp / (int(call.sum()) + int((y == 1).sum())), tp / int(call.sum()), call.mean()))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_f1_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    p = np.round(rng.random(n), int(rng.integers(1, 4)))  # few decimals: ties
    y = (rng.random(n) < p).astype(int)
    cands = brute_candidates(y, p)
    best = max(f1 for _, f1, _, _ in cands)
    expected = next(t for t, f1, _, _ in cands if f1 == best)  # ties: the higher threshold
    assert metrics.choose_threshold(y, p, "f1") == expected


@pytest.mark.parametrize("seed", range(6))
def test_ppv_threshold_meets_the_ppv_at_the_lowest_threshold(seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.random(400), 2)
    y = (rng.random(p.size) < p).astype(int)
    t = metrics.choose_threshold(y, p, "ppv:0.8")
    ppv, _ = metrics.ppv_npv(y, p, t)
    assert ppv >= 0.8 and np.mean(p >= t) >= 0.01
    meeting = [c for c, _, q, cov in brute_candidates(y, p) if q >= 0.8 and cov >= 0.01]
    assert t == min(meeting)


def test_ppv_threshold_falls_back_to_the_best_covered_ppv():
    rng = np.random.default_rng(9)
    # p says nothing (rises 30%), but for one sure rise alone at the top: PPV 1 on 0.2% of windows
    p = np.r_[1.0, np.round(rng.random(500) * 0.98, 2)]
    y = np.r_[1, (rng.random(500) < 0.3).astype(int)]
    t = metrics.choose_threshold(y, p, "ppv:0.99")
    covered = [(q, c) for c, _, q, cov in brute_candidates(y, p) if cov >= 0.01]
    best = max(q for q, _ in covered)
    assert best < 0.99
    assert t == min(c for q, c in covered if q == best)  # ties: the lower threshold, more calls
    assert t < 1.0 and np.mean(p >= t) >= 0.01


def test_base_rate_and_fixed_rules():
    y, p = np.array([1, 0, 0, 1, 0]), np.array([0.7, 0.2, 0.6, 0.4, 0.1])
    assert metrics.choose_threshold(y, p, "base_rate") == pytest.approx(0.4)
    assert metrics.choose_threshold(y, p, "fixed:0.42") == 0.42
    assert metrics.choose_threshold(y, p, " FIXED:0.420 ") == 0.42


def test_choose_threshold_refuses_bad_input():
    with pytest.raises(ValueError, match="no samples"):
        metrics.choose_threshold([], [], "f1")
    with pytest.raises(ValueError, match="finite"):
        metrics.choose_threshold([0, 1], [0.2, float("nan")], "f1")
    with pytest.raises(ValueError, match="not understood"):
        metrics.choose_threshold([0, 1], [0.2, 0.8], "f2")


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("f1", "f1"),
        (" F1 ", "f1"),
        ("base_rate", "base_rate"),
        ("PPV:0.60", "ppv:0.6"),
        ("fixed:.5", "fixed:0.5"),
    ],
)
def test_parse_threshold_rule_canonicalises(text, canonical):
    assert metrics.parse_threshold_rule(text) == canonical
    assert metrics.parse_threshold_rule(canonical) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "",
        "f2",
        "base rate",
        "ppv",
        "ppv:",
        "ppv:0",
        "ppv:1",
        "ppv:abc",
        "fixed:-0.1",
        "fixed:nan",
        "ppv:inf",
        "npv:0.5",
    ],
)
def test_parse_threshold_rule_names_the_accepted_forms(text):
    with pytest.raises(ValueError, match=r"f1, base_rate, ppv:X or fixed:X"):
        metrics.parse_threshold_rule(text)


def test_every_threshold_rule_form_is_documented():
    assert set(metrics.THRESHOLD_RULES) == {"f1", "base_rate", "ppv:X", "fixed:X"}
