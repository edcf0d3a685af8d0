"""The calibration statistics of surrogate.uncertainty against direct computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from surrogate.ensemble import member_spread
from surrogate.uncertainty import (
    GAUSSIAN_COVERAGE,
    calibration_summary,
    confidence_word,
    coverage,
    fit_std_scale,
    gaussian_half_width,
    predicted_relative_error,
    reliability,
    spearman,
    spearman_ceiling,
)


def gaussian(n=4000, m=30, scale=1.0, seed=0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(size=(n, m))
    std = np.exp(rng.normal(size=(n, m)))
    c = mean + scale * std * rng.normal(size=(n, m))
    return mean, std, c


def test_coverage_is_the_fraction_inside():
    mean = np.zeros((2, 3))
    std = np.ones((2, 3))
    c = np.array([[0.5, 1.0, 1.5], [2.0, -2.5, 0.0]])
    assert coverage(mean, std, c, 1) == pytest.approx(3 / 6)   # 0.5, 1.0 (closed), 0.0
    assert coverage(mean, std, c, 2) == pytest.approx(5 / 6)


def test_gaussian_coverage_and_calibration():
    mean, std, c = gaussian(scale=1.0)
    assert coverage(mean, std, c, 1) == pytest.approx(GAUSSIAN_COVERAGE[1], abs=0.01)
    assert coverage(mean, std, c, 2) == pytest.approx(GAUSSIAN_COVERAGE[2], abs=0.01)
    # spread 3x too narrow: the fitted factor restores it (over-confident raw spread)
    s = fit_std_scale(mean, std / 3, c)
    assert s == pytest.approx(3.0, rel=0.03)
    assert confidence_word(s) == "over-confident"
    assert coverage(mean, s * std / 3, c, 2) >= GAUSSIAN_COVERAGE[2]
    assert coverage(mean, s * std / 3, c, 2) == pytest.approx(GAUSSIAN_COVERAGE[2], abs=1e-3)
    assert confidence_word(fit_std_scale(mean, 2 * std, c)) == "under-confident"


def test_half_width_and_reliability():
    assert gaussian_half_width(GAUSSIAN_COVERAGE[2]) == pytest.approx(2.0, rel=1e-12)
    mean, std, c = gaussian()
    r = reliability(mean, std, c)
    assert np.allclose(r["observed"], r["expected"], atol=0.015)
    assert r["observed"] == sorted(r["observed"])


def test_spearman_matches_scipy_and_ties():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=50), rng.normal(size=50)
    b[:10] = b[0]                                               # ties
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, rel=1e-12)
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert math.isnan(spearman(a, np.ones_like(a)))


def test_member_spread_is_sample_std_and_zero_for_identical_members():
    rng = np.random.default_rng(2)
    P = rng.normal(size=(5, 7, 4))
    assert np.allclose(member_spread(P), P.std(axis=0, ddof=1), rtol=1e-13)
    same = np.broadcast_to(rng.normal(size=(7, 4)) * 1e3 + 0.1, (5, 7, 4))
    assert np.all(member_spread(np.array(same)) == 0.0)


def test_predicted_relative_error_and_summary():
    mean = np.array([[3.0, 4.0], [1.0, 1.0]])
    std = np.array([[0.3, 0.4], [0.0, 0.1]])
    assert np.allclose(predicted_relative_error(mean, std), [0.1, 0.1 / np.sqrt(2)])
    assert np.allclose(predicted_relative_error(mean, std, shift=np.array([1.0, 1.0])),
                       [0.5 / np.sqrt(13), 0.1])        # a zero denominator counts as 1
    s = calibration_summary(*gaussian(n=300, m=8))
    assert {"coverage_1sigma", "coverage_2sigma", "spearman", "reliability"} <= set(s)


def test_spearman_ceiling_of_a_gaussian_ensemble():
    # members drawn around sample-dependent scales: the ceiling is high when scales vary a lot
    rng = np.random.default_rng(3)
    sig = np.exp(2 * rng.normal(size=(400, 1)))
    P = 10 + sig * rng.normal(size=(8, 400, 50))
    assert spearman_ceiling(P) > 0.8
    flat = 10 + rng.normal(size=(8, 400, 50))
    assert abs(spearman_ceiling(flat)) < 0.2
