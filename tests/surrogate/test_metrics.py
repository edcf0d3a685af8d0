"""The scale-free metrics and the conditioning rule of surrogate.metrics against direct numpy
computations (issue 18)."""

from __future__ import annotations

import numpy as np
import pytest

from surrogate.metrics import (
    ILL_CONDITIONED_FRACTION,
    conditioning,
    conditioning_note,
    output_statistics,
    r2_rmse,
    relative_frobenius,
    scale_free_errors,
)


@pytest.fixture
def scaled() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training targets, test targets and predictions with output scales 0.5 ... 800."""
    rng = np.random.default_rng(3)
    scales = np.array([0.5, 3.0, 40.0, 800.0])
    train = rng.normal(size=(50, 4)) * scales + np.array([1.0, -2.0, 0.0, 300.0])
    test = rng.normal(size=(20, 4)) * scales + np.array([1.0, -2.0, 0.0, 300.0])
    pred = test + 0.05 * rng.normal(size=test.shape) * scales
    return train, test, pred


def test_relative_frobenius_matches_numpy(scaled) -> None:
    train, test, pred = scaled
    mu, s = train.mean(axis=0), train.std(axis=0)
    expected = np.sqrt((((pred - test) / s) ** 2).sum()) / np.sqrt(
        (((test - mu) / s) ** 2).sum())
    mean, std = output_statistics(train)
    np.testing.assert_allclose(mean, mu, rtol=1e-15)
    np.testing.assert_allclose(std, s, rtol=1e-15)
    assert relative_frobenius(pred, test, mean, std) == pytest.approx(expected, rel=1e-13)
    # scale-free: rescaling one output (units) changes nothing
    k = np.array([1.0, 1e3, 1.0, 1e-2])
    assert relative_frobenius(pred * k, test * k, *output_statistics(train * k)) == \
        pytest.approx(expected, rel=1e-12)


def test_r2_and_rmse_match_numpy(scaled) -> None:
    _, test, pred = scaled
    r2, rmse = r2_rmse(pred, test)
    for j in range(test.shape[1]):
        ss_res = np.sum((pred[:, j] - test[:, j]) ** 2)
        ss_tot = np.sum((test[:, j] - np.mean(test[:, j])) ** 2)
        assert r2[j] == pytest.approx(1 - ss_res / ss_tot, rel=1e-13)
        assert rmse[j] == pytest.approx(np.sqrt(np.mean((pred[:, j] - test[:, j]) ** 2)),
                                        rel=1e-13)
    # the errors are 5 % of each output's spread: R^2 ~ 1 - 0.05^2 on every output
    assert np.all((r2 > 0.99) & (r2 < 0.9995))


def test_constant_outputs_are_left_out() -> None:
    rng = np.random.default_rng(0)
    train = np.column_stack([rng.normal(size=30), np.zeros(30), np.full(30, 7.0)])
    test = np.column_stack([rng.normal(size=10), np.zeros(10), np.full(10, 7.0)])
    pred = test + 0.1
    mean, std = output_statistics(train)
    assert std[1] == 0 and std[2] == 0
    expected = np.linalg.norm(pred[:, 0] - test[:, 0]) / np.linalg.norm(test[:, 0] - mean[0])
    sf = scale_free_errors(pred, test, mean, std)
    assert sf["relative_frobenius"] == pytest.approx(expected, rel=1e-13)
    assert sf["n_constant_outputs"] == 2
    assert sf["r2"][1] is None and sf["r2"][2] is None          # undefined, valid JSON
    assert sf["r2_min"] == sf["r2_median"] == pytest.approx(sf["r2"][0])
    assert sf["rmse"][1] == pytest.approx(0.1)


def test_conditioning_rule() -> None:
    rng = np.random.default_rng(1)
    c = rng.normal(size=(100, 5)) + 10.0               # norms ~ 22: well conditioned
    cond = conditioning(c)
    assert not cond["ill_conditioned"] and cond["n_small"] == 0
    assert conditioning_note("test", cond) is None
    norms = np.linalg.norm(c, axis=1)
    assert cond["min_over_median"] == pytest.approx(norms.min() / np.median(norms))
    # two samples just below the threshold of the median norm
    c[:2] *= 0.9 * ILL_CONDITIONED_FRACTION * np.median(norms) / norms[:2, None]
    cond = conditioning(c)
    assert cond["ill_conditioned"] and cond["n_small"] == 2
    assert "ill-conditioned on the test split: 2 sample(s)" in conditioning_note("test", cond)
    both = conditioning_note({"train": conditioning(c[5:]), "validation": cond, "test": cond})
    assert "on the validation and test splits: 2, 2 sample(s)" in both
    # ... and just above it: fine
    c[:2] *= 1.2
    assert not conditioning(c)["ill_conditioned"]
    # with the shift (centred targets) the reference is c - shift
    shift = c[5].copy()
    assert conditioning(c, shift)["ill_conditioned"]          # sample 5 has norm 0
