"""Calibrators against simulated links whose truth is known, and their file form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.ml import calibration, metrics
from app.ml.calibration import Calibrator


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def simulate(n: int, seed: int, link) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn with P(rise | logit) = link(logit)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    return z, (rng.random(n) < link(z)).astype(np.float64)


def step_link(z: np.ndarray) -> np.ndarray:
    # 0.2 below 0, 0.8 above: no sigmoid of the logit comes close
    return np.where(z < 0, 0.2, 0.8)


def test_platt_recovers_the_link_it_was_simulated_with():
    z, y = simulate(200_000, 0, lambda z: sigmoid(2.0 * z - 0.5))
    cal = calibration.fit_platt(z, y)
    assert cal.kind == "platt"
    assert cal.a == pytest.approx(2.0, abs=0.05)
    assert cal.b == pytest.approx(-0.5, abs=0.03)


def test_platt_is_deterministic():
    z, y = simulate(5000, 1, sigmoid)
    assert calibration.fit_platt(z, y) == calibration.fit_platt(z, y)


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_calibration_mends_overconfident_shifted_logits(kind):
    # the net's logits are 3x too confident and shifted by +1: fit on one half, score the other
    z, y = simulate(40_000, 2, sigmoid)
    raw = 3.0 * z + 1.0
    cal = calibration.fit(kind, raw[:20_000], y[:20_000])
    assert cal.kind == kind
    held_raw, held_y = raw[20_000:], y[20_000:]
    before, after = sigmoid(held_raw), cal.apply(held_raw)
    assert metrics.log_loss(held_y, after) < metrics.log_loss(held_y, before) - 0.1
    assert metrics.ece(held_y, before) > 0.1
    assert metrics.ece(held_y, after) < 0.02
    # a calibrator never reorders: the ranking, hence AUC, survives
    assert metrics.roc_auc(held_y, after) == pytest.approx(metrics.roc_auc(held_y, before), abs=0.005)


def test_isotonic_is_monotone_with_ordered_breakpoints():
    z, y = simulate(20_000, 3, sigmoid)
    cal = calibration.fit_isotonic(z, y)
    xs, ys = np.array(cal.xs), np.array(cal.ys)
    assert np.all(np.diff(xs) > 0) and np.all(np.diff(ys) >= 0)
    assert ys.min() >= calibration.P_MIN and ys.max() <= 1 - calibration.P_MIN
    grid = np.linspace(-10, 10, 2001)
    assert np.all(np.diff(cal.apply(grid)) >= 0)
    # flat beyond the ends
    assert cal.apply(np.array([-1e9, 1e9])).tolist() == [ys[0], ys[-1]]


def test_isotonic_hand_example_pools_violators_and_ties():
    # block means 0, 1, 0, 1: the middle pair violates order and pools to 0.5 at logit 1.5
    cal = calibration.fit_isotonic([3.0, 0.0, 2.0, 1.0], [1, 0, 0, 1])
    assert cal.xs == (0.0, 1.5, 3.0)
    assert cal.ys == (calibration.P_MIN, 0.5, 1 - calibration.P_MIN)
    # tied logits get one probability, whatever their labels
    tied = calibration.fit_isotonic([0.0, 0.0, 0.0, 1.0], [0, 1, 1, 1])
    assert tied.xs == (0.0, 1.0)
    assert tied.ys == pytest.approx((2 / 3, 1 - calibration.P_MIN))


def test_isotonic_breakpoints_are_capped(monkeypatch):
    z, y = simulate(20_000, 4, sigmoid)
    assert len(calibration.fit_isotonic(z, y).xs) > 8  # uncapped, PAV leaves more blocks
    monkeypatch.setattr(calibration, "MAX_BREAKPOINTS", 8)
    cal = calibration.fit_isotonic(z, y)
    assert 2 <= len(cal.xs) <= 8
    assert np.all(np.diff(cal.xs) > 0) and np.all(np.diff(cal.ys) >= 0)
    assert metrics.log_loss(y, cal.apply(z)) < metrics.log_loss(y, np.full_like(y, y.mean())) - 0.1


def test_offset_is_the_pre_calibrator_reading():
    z = np.linspace(-8, 8, 33).reshape(3, 11)
    cal = Calibrator.offset(-0.7)
    assert (cal.kind, cal.a, cal.b) == ("platt", 1.0, -0.7)
    got = cal.apply(z)
    assert got.shape == (3, 11) and got.dtype == np.float64
    np.testing.assert_allclose(got, sigmoid(z - 0.7), rtol=1e-12)


def test_apply_keeps_shape_and_is_finite_at_extremes():
    iso = calibration.fit_isotonic([0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1])
    assert iso.apply(np.zeros((2, 3))).shape == (2, 3)
    platt = Calibrator("platt", a=3.0, b=0.5)
    out = platt.apply(np.array([-1e6, 0.0, 1e6]))
    assert out.tolist() == [0.0, pytest.approx(sigmoid(np.array(0.5))), 1.0]


@pytest.mark.parametrize("kind", ["platt", "isotonic"])
def test_to_dict_round_trips_exactly_through_json(kind):
    z, y = simulate(3000, 5, lambda z: sigmoid(0.7 * z + 0.3))
    cal = calibration.fit(kind, z, y)
    d = json.loads(json.dumps(cal.to_dict()))
    assert d["kind"] == kind
    back = Calibrator.from_dict(d)
    assert back == cal
    assert np.array_equal(back.apply(z), cal.apply(z))


PLATT = {"kind": "platt", "a": 1.5, "b": -0.2}
ISO = {"kind": "isotonic", "xs": [-1.0, 0.0, 2.0], "ys": [0.1, 0.4, 0.9]}


@pytest.mark.parametrize(
    ("d", "match"),
    [
        ({"kind": "beta", "a": 1.0, "b": 0.0}, "unknown calibrator kind"),
        ({"a": 1.0, "b": 0.0}, "unknown calibrator kind"),
        ("platt", "mapping"),
        ({**PLATT, "a": 0.0}, "a > 0"),
        ({**PLATT, "a": -2.0}, "a > 0"),
        ({**PLATT, "a": float("nan")}, "finite"),
        ({**PLATT, "b": float("inf")}, "finite"),
        ({**PLATT, "a": "1.5"}, "must be a number"),
        ({**PLATT, "b": True}, "must be a number"),
        ({"kind": "platt", "a": 1.0}, "keys"),
        ({**PLATT, "xs": [0.0]}, "keys"),
        ({**ISO, "xs": [], "ys": []}, "1 to 4096"),
        ({**ISO, "ys": [0.1, 0.4]}, "differ in length"),
        ({**ISO, "xs": [0.0, -1.0, 2.0]}, "strictly increasing"),
        ({**ISO, "xs": [0.0, 0.0, 2.0]}, "strictly increasing"),
        ({**ISO, "ys": [0.1, 0.5, 0.4]}, "never decrease"),
        ({**ISO, "ys": [0.1, 0.4, 1.5]}, r"\[0, 1\]"),
        ({**ISO, "ys": [-0.1, 0.4, 0.9]}, r"\[0, 1\]"),
        ({**ISO, "xs": [-1.0, float("nan"), 2.0]}, "finite"),
        ({**ISO, "xs": "abc"}, "list of numbers"),
        ({**ISO, "xs": list(range(4097)), "ys": [0.5] * 4097}, "at most 4096"),
    ],
)
def test_from_dict_refuses_what_cannot_be_applied(d, match):
    with pytest.raises(ValueError, match=match):
        Calibrator.from_dict(d)


def test_from_dict_accepts_the_valid_forms():
    assert Calibrator.from_dict(PLATT) == Calibrator("platt", a=1.5, b=-0.2)
    iso = Calibrator.from_dict(ISO)
    assert iso.apply(np.array([-5.0, -0.5, 1.0, 9.0])).tolist() == pytest.approx([0.1, 0.25, 0.65, 0.9])


def test_auto_picks_isotonic_for_a_step_link():
    z, y = simulate(20_000, 6, step_link)
    kind, scores = calibration.choose_kind(z, y)
    assert kind == "isotonic" and scores["isotonic"] < scores["platt"] - 0.02
    assert calibration.fit("auto", z, y) == calibration.fit_isotonic(z, y)  # refit on all of it


def test_auto_picks_platt_for_a_platt_link():
    z, y = simulate(20_000, 7, lambda z: sigmoid(1.5 * z - 0.3))
    kind, scores = calibration.choose_kind(z, y)
    assert kind == "platt" and scores["platt"] < scores["isotonic"]
    assert calibration.fit("auto", z, y) == calibration.fit_platt(z, y)


def test_auto_falls_back_to_platt_when_a_half_has_one_class():
    z, y = np.arange(6.0), np.array([0, 0, 0, 1, 1, 1])
    assert calibration.choose_kind(z, y) == ("platt", {})
    assert calibration.fit("auto", z, y).kind == "platt"


def test_platt_keeps_the_ranking_when_the_logits_are_backwards():
    # the fit wants a < 0; a = 1 is kept and b alone matches the base rate of the sigmoid
    z, y = simulate(10_000, 8, lambda z: sigmoid(-2.0 * z))
    cal = calibration.fit_platt(z, y)
    assert cal.a == 1.0
    assert np.mean(sigmoid(z + cal.b)) == pytest.approx(y.mean(), abs=1e-9)


def test_platt_on_constant_logits_matches_the_base_rate():
    y = np.array([0, 1, 1, 0, 1])
    cal = calibration.fit_platt(np.full(5, 0.3), y)
    assert cal.a == 1.0
    assert cal.apply(np.array([0.3]))[0] == pytest.approx(0.6, abs=1e-9)


@pytest.mark.parametrize(
    ("logits", "y", "match"),
    [
        ([], [], "no samples"),
        ([0.1, 0.2], [0, 1, 1], "differ in length"),
        ([0.1, float("nan")], [0, 1], "finite"),
        ([0.1, float("inf")], [0, 1], "finite"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "one class"),
        ([0.1, 0.2], [0, 0.5], "0 .no rise. or 1"),
    ],
)
@pytest.mark.parametrize("kind", calibration.KINDS)
def test_fit_refuses_bad_input(kind, logits, y, match):
    with pytest.raises(ValueError, match=match):
        calibration.fit(kind, logits, y)


def test_fit_refuses_an_unknown_kind():
    with pytest.raises(ValueError, match="auto, platt, isotonic"):
        calibration.fit("beta", [0.0, 1.0], [0, 1])
    assert calibration.KINDS == ("auto", "platt", "isotonic")


def test_constructor_judges_too():
    with pytest.raises(ValueError, match="no breakpoints"):
        Calibrator("platt", xs=(0.0,), ys=(0.5,))
    with pytest.raises(ValueError, match="no a or b"):
        Calibrator("isotonic", a=2.0, xs=(0.0,), ys=(0.5,))
    assert math.isclose(Calibrator("isotonic", xs=(0.0,), ys=(0.25,)).apply(np.array(7.0)), 0.25)
