"""Calibration statistics of a predictive standard deviation (ensembles, issue 19).

The surrogate predicts ``mean`` and ``std`` (both (n, m), physical units) for n samples of m
observables; the truth is ``c`` (n, m). The functions here are the one definition of every
number that ``train-surrogate --ensemble`` (calibration on the validation split),
``evaluate-surrogate`` (coverage on fresh solves) and ``refine-surrogate`` (scores) report:

* interval coverage at k sigma: the fraction of all n x m entries with
  ``|c - mean| <= k std`` (a Gaussian predictive distribution gives 0.6827 for k = 1 and
  0.9545 for k = 2);
* the calibration factor: the one scale ``s`` for ``std = s std_raw`` that makes the
  +-2 sigma coverage of the validation split equal its Gaussian value 0.9545 (a quantile of
  the standardised residuals ``|c - mean| / std_raw``);
* the per-sample predicted relative error ``||std_i|| / ||mean_i - c_shift||`` (the
  counterpart of the actual relative error ``||mean_i - c_i|| / ||c_i - c_shift||``, SPEC
  section 4) and the Spearman rank correlation between the two;
* a reliability curve: for nominal central probabilities p, the observed fraction inside
  ``mean +- z_p std`` with ``z_p = Phi^-1((1 + p) / 2)``.

Plain NumPy/SciPy, no torch: importable from any layer above the solvers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: coverage of +-k sigma for a Gaussian, k = 1, 2 (erf(k / sqrt 2))
GAUSSIAN_COVERAGE = {1: math.erf(1 / math.sqrt(2)), 2: math.erf(2 / math.sqrt(2))}
#: nominal probabilities of the reliability curve
RELIABILITY_LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2).tolist()) + (0.99,)


def _arrays(mean: np.ndarray, std: np.ndarray, c: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean, std, c = (np.asarray(a, dtype=np.float64) for a in (mean, std, c))
    if mean.shape != c.shape or std.shape != c.shape or c.ndim != 2:
        raise ValueError(f"mean, std and c must have the same shape (n, m), got {mean.shape}, "
                         f"{std.shape} and {c.shape}")
    return mean, std, c


def standardized_abs_residuals(mean: np.ndarray, std: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``|c - mean| / std`` per entry, shape (n, m); 0 where both are 0, inf where only the
    std is 0.

    Parameters
    ----------
    mean, std, c : numpy.ndarray, shape (n, m)
        Prediction, predictive standard deviation and truth, physical units.
    """
    mean, std, c = _arrays(mean, std, c)
    r = np.abs(c - mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = r / std
    return np.where(std > 0, z, np.where(r > 0, np.inf, 0.0))


def coverage(mean: np.ndarray, std: np.ndarray, c: np.ndarray, k: float) -> float:
    """Fraction of the n x m entries with ``|c - mean| <= k std`` (all observables of all
    samples together).

    Parameters
    ----------
    mean, std, c : numpy.ndarray, shape (n, m)
    k : float
        Half-width of the interval in standard deviations.
    """
    mean, std, c = _arrays(mean, std, c)
    if c.size == 0:
        return float("nan")
    return float(np.mean(np.abs(c - mean) <= k * std))


def gaussian_half_width(p: float) -> float:
    """``z`` with ``P(|N(0, 1)| <= z) = p`` (so 1 for p = 0.6827, 2 for p = 0.9545)."""
    from scipy.special import erfinv

    return float(math.sqrt(2.0) * erfinv(p))


def fit_std_scale(mean: np.ndarray, std_raw: np.ndarray, c: np.ndarray, k: float = 2.0
                  ) -> float:
    """The calibration factor ``s`` (std = s std_raw) that makes the +-k sigma coverage of
    these data equal the Gaussian value (0.9545 for k = 2).

    ``s = q / k`` with ``q`` the Gaussian-coverage quantile of the standardised residuals
    ``|c - mean| / std_raw`` over all entries. s > 1: the raw spread was over-confident (too
    narrow); s < 1: under-confident.

    Returns
    -------
    float
        The factor; 1.0 when it cannot be determined (no data, or every raw std zero).
    """
    z = standardized_abs_residuals(mean, std_raw, c).ravel()
    if z.size == 0 or not np.any(np.asarray(std_raw) > 0):
        return 1.0
    q = float(np.quantile(z, math.erf(k / math.sqrt(2.0)), method="higher"))
    if not np.isfinite(q) or q <= 0:
        return 1.0
    return q / k


def predicted_relative_error(mean: np.ndarray, std: np.ndarray,
                             shift: np.ndarray | None = None) -> np.ndarray:
    """Per-sample predicted relative error ``||std_i|| / ||mean_i - shift||``, shape (n,).

    The counterpart of :func:`surrogate.metrics.relative_errors` (which divides the actual
    error by ``||c_i - shift||``): the expected norm of ``c_i - mean_i`` is ``||std_i||``
    for independent errors.

    Parameters
    ----------
    mean, std : numpy.ndarray, shape (n, m)
    shift : numpy.ndarray, shape (m,), optional
        Target centre (the training mean for DCR, SPEC section 2); zero if omitted.
    """
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    ref = mean if shift is None else mean - np.asarray(shift, dtype=np.float64)
    denom = np.linalg.norm(ref, axis=1)
    return np.linalg.norm(std, axis=1) / np.where(denom > 0, denom, 1.0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two (n,) arrays (average ranks for ties); NaN for n < 2
    or a constant array."""
    from scipy.stats import rankdata

    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"spearman: {a.size} and {b.size} values")
    if a.size < 2:
        return float("nan")
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / denom) if denom > 0 else float("nan")


def spearman_ceiling(members: np.ndarray, shift: np.ndarray | None = None,
                     ddof: int = 1) -> float:
    """The rank correlation a perfectly calibrated ensemble would reach on these inputs.

    Each member k in turn plays the truth: the spread of the other K - 1 members predicts the
    relative error of their mean against member k (:func:`predicted_relative_error` vs the
    actual one), and the Spearman correlations are averaged. The truth is then drawn from the
    very distribution the spread describes, so the value measures how much a realised error
    norm can follow its expected size at all: with errors concentrated in a few directions
    of the m observables the realised norm scatters widely around its expectation and even
    a perfect std ranks the samples' errors only loosely.

    Parameters
    ----------
    members : numpy.ndarray, shape (K, n, m)
        The members' predictions (K >= 3).
    shift : numpy.ndarray, shape (m,), optional

    Returns
    -------
    float (NaN for K < 3)
    """
    from surrogate.metrics import relative_errors

    P = np.asarray(members, dtype=np.float64)
    K = P.shape[0]
    if K < 3:
        return float("nan")
    values = []
    for k in range(K):
        rest = np.delete(P, k, axis=0)
        mean = rest.mean(axis=0)
        std = np.sqrt(((rest - mean) ** 2).sum(axis=0) / (K - 1 - ddof))
        values.append(spearman(predicted_relative_error(mean, std, shift),
                               relative_errors(mean, P[k], shift)))
    return float(np.nanmean(values))


def reliability(mean: np.ndarray, std: np.ndarray, c: np.ndarray,
                levels: tuple[float, ...] = RELIABILITY_LEVELS) -> dict[str, list[float]]:
    """Expected vs observed coverage of the central intervals ``mean +- z_p std``.

    Returns
    -------
    dict
        ``expected`` (the nominal p's) and ``observed`` (fraction of entries inside), lists
        of equal length.
    """
    observed = [coverage(mean, std, c, gaussian_half_width(p)) for p in levels]
    return {"expected": [float(p) for p in levels], "observed": observed}


def calibration_summary(mean: np.ndarray, std: np.ndarray, c: np.ndarray,
                        shift: np.ndarray | None = None) -> dict[str, Any]:
    """The calibration numbers of one data set (the report's ``uncertainty`` entries).

    Parameters
    ----------
    mean, std, c : numpy.ndarray, shape (n, m)
        Prediction, (calibrated) predictive std and truth, physical units.
    shift : numpy.ndarray, shape (m,), optional
        Target centre of the relative errors.

    Returns
    -------
    dict
        ``n_samples``, ``n_values``, ``coverage_1sigma``, ``coverage_2sigma`` (fractions of all
        entries), ``gaussian_1sigma``/``gaussian_2sigma`` (0.6827/0.9545), ``spearman``
        (predicted vs actual per-sample relative error), ``rms_z`` (root mean square of the
        standardised residuals; 1 for a calibrated Gaussian), ``mean_predicted_error`` and
        ``mean_actual_error``, and ``reliability`` (:func:`reliability`).
    """
    from surrogate.metrics import relative_errors

    mean, std, c = _arrays(mean, std, c)
    actual = relative_errors(mean, c, shift)
    predicted = predicted_relative_error(mean, std, shift)
    z = standardized_abs_residuals(mean, std, c)
    return {
        "n_samples": int(c.shape[0]), "n_values": int(c.size),
        "coverage_1sigma": coverage(mean, std, c, 1.0),
        "coverage_2sigma": coverage(mean, std, c, 2.0),
        "gaussian_1sigma": GAUSSIAN_COVERAGE[1], "gaussian_2sigma": GAUSSIAN_COVERAGE[2],
        "spearman": spearman(predicted, actual),
        "rms_z": float(np.sqrt(np.mean(z ** 2))) if z.size else float("nan"),
        "mean_predicted_error": float(predicted.mean()) if predicted.size else float("nan"),
        "mean_actual_error": float(actual.mean()) if actual.size else float("nan"),
        "reliability": reliability(mean, std, c),
    }


def confidence_word(scale: float) -> str:
    """How the raw spread compared with the errors: "over-confident" (s > 1: too narrow),
    "under-confident" (s < 1) or "calibrated" (within 2 %)."""
    if abs(scale - 1.0) <= 0.02:
        return "calibrated"
    return "over-confident" if scale > 1.0 else "under-confident"
