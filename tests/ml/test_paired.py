"""The Diebold-Mariano test live promotion relies on: it finds a truly better forecaster, never
calls an equal one better, and is not fooled by autocorrelated loss differences (the case a
plain t-test gets wrong)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.ml.paired import PairedTest, bartlett_lag, diebold_mariano, log_losses, long_run_variance


def ar1(rng: np.random.Generator, n: int, phi: float) -> np.ndarray:
    """A stationary AR(1) series with mean zero: x_t = phi x_(t-1) + e_t."""
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0] / math.sqrt(1.0 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    return x


def naive_p(d: np.ndarray) -> float:
    """The one-sided p-value of a plain t-test of mean(d) > 0 (iid assumed)."""
    z = d.mean() / (d.std(ddof=1) / math.sqrt(d.size))
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def test_a_clearly_better_forecaster_gets_a_tiny_p_value() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000).astype(float)
    worse = np.full(2000, 0.9)  # confidently wrong half the time
    better = np.full(2000, 0.5)
    t = diebold_mariano([log_losses(y, worse)], [log_losses(y, better)])
    assert t.n == 2000 and t.mean_diff > 0.4
    assert t.p_value < 1e-9 and t.statistic > 6
    assert t.better(0.95) and t.better(0.999)
    # the other way round: B is the worse one, never "better"
    back = diebold_mariano([log_losses(y, better)], [log_losses(y, worse)])
    assert back.mean_diff < 0 and back.p_value > 1 - 1e-9 and not back.better(0.5)


def test_identical_forecasters_are_not_better() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(float)
    p = rng.random(500)
    t = diebold_mariano([log_losses(y, p)], [log_losses(y, p)])
    assert t == PairedTest(500, 0.0, 0.0, 0.5)
    assert not t.better(0.51)


def test_too_few_outcomes_decide_nothing() -> None:
    for a, b in (([], []), ([np.array([1.0])], [np.array([0.0])])):
        t = diebold_mariano(a, b)
        assert t.n == len(a) and math.isnan(t.p_value) and not t.better(0.95)
    with pytest.raises(ValueError, match="segments"):
        diebold_mariano([np.zeros(3)], [np.zeros(3), np.zeros(3)])


def test_autocorrelated_noise_does_not_fool_it() -> None:
    """Under the null (mean difference 0) with AR(1) differences, phi 0.5, the test rejects at 5%
    about 5% of the time; a plain t-test, blind to the correlation, about three times as often."""
    n, seeds, phi = 1000, 400, 0.5
    dm = naive = 0
    for seed in range(seeds):
        d = ar1(np.random.default_rng(seed), n, phi)
        dm += diebold_mariano([d], [np.zeros(n)]).p_value < 0.05
        naive += naive_p(d) < 0.05
    assert 0.02 <= dm / seeds <= 0.09
    assert naive / seeds >= 0.13
    assert naive >= 2 * dm


def test_and_it_still_finds_a_real_difference_in_autocorrelated_noise() -> None:
    n, hits = 1000, 0
    for seed in range(50):
        d = 0.3 + ar1(np.random.default_rng(1000 + seed), n, 0.5)
        hits += diebold_mariano([d], [np.zeros(n)]).better(0.95)
    assert hits >= 45


def test_markets_are_independent_segments() -> None:
    """Opposite differences on two markets pool to no evidence; each market's own correlation
    is measured within it, never across the seam between them."""
    rng = np.random.default_rng(7)
    up, down = 0.5 + 0.1 * rng.standard_normal(300), -0.5 + 0.1 * rng.standard_normal(300)
    t = diebold_mariano([up, down], [np.zeros(300), np.zeros(300)])
    assert t.n == 600 and abs(t.mean_diff) < 0.02 and not t.better(0.9)
    # the variance is the sum of the segments' own long-run variances (scaled), as documented
    want = (300 * long_run_variance(up) + 300 * long_run_variance(down)) / 600**2
    assert t.statistic == pytest.approx(t.mean_diff / math.sqrt(want))
    one = diebold_mariano([up], [np.zeros(300)])
    assert one.better(0.999)


def test_long_run_variance_and_its_lag() -> None:
    d = np.random.default_rng(3).standard_normal(400)
    assert long_run_variance(d, lag=0) == pytest.approx(d.var())
    assert bartlett_lag(100) == 4 and bartlett_lag(1000) == 6 and bartlett_lag(1) == 1
    # positively correlated: the long-run variance exceeds the plain one
    x = ar1(np.random.default_rng(4), 4000, 0.5)
    assert long_run_variance(x) > 2 * x.var()
    assert math.isnan(long_run_variance(np.array([1.0])))


def test_log_losses_are_finite_at_certainty() -> None:
    got = log_losses(np.array([1.0, 0.0, 1.0, 0.0]), np.array([1.0, 0.0, 0.0, 1.0]))
    assert np.all(np.isfinite(got))
    assert got[0] == pytest.approx(0.0, abs=1e-9) and got[2] == pytest.approx(-math.log(1e-12))
    assert log_losses(np.array([1.0]), np.array([0.5]))[0] == pytest.approx(math.log(2))
