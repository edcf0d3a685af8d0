"""Data-driven defaults for an unknown problem (issue 18): target scaling and width.

Both rules look at the training targets only (never the validation or test split):

- :func:`target_scaling`: outputs are scaled one by one (``"per_output"``, each by its
  training standard deviation, :mod:`surrogate.normalization`) when their standard
  deviations differ by more than :data:`SCALE_RATIO`, else by one common scale (``"global"``).
- :func:`selection_score`: the model is selected by the mean per-sample relative error
  (SPEC section 4) unless that is ill-conditioned on the training or validation targets
  (:func:`surrogate.metrics.conditioning`: near-zero targets), then by the relative Frobenius
  error of the standardised outputs.
- :func:`default_width` (default preset, problems other than CDR and DCR): the larger of the
  spectrum width (:data:`SPECTRUM_TOL`) and the data width (:func:`data_width`: the widest
  network with no more weights than training target values), within [:data:`MIN_WIDTH`,
  :data:`MAX_WIDTH`].
- :func:`spectrum_width`: the separable model ``W [F; 1]`` predicts in an affine space of
  dimension ``width``, so it cannot beat the *projection floor*: the relative Frobenius norm
  of the centred (normalised) training targets outside their leading ``width`` principal
  directions (:func:`projection_floor`). The width rule takes the smallest width whose floor
  is at most a tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from surrogate.metrics import conditioning, output_statistics
from surrogate.normalization import per_output_scales

#: bounds of the data-driven width
MIN_WIDTH, MAX_WIDTH = 8, 64
#: projection floor the default width must reach (relative Frobenius norm)
SPECTRUM_TOL = 1e-3
#: the width when there is no data to look at
FALLBACK_WIDTH = 8

#: per-output target scaling when the largest training standard deviation of an output is
#: more than this many times the smallest (outputs constant on the training split ignored)
SCALE_RATIO = 10.0


def target_scaling(c_train: Any) -> str:
    """``"per_output"`` or ``"global"`` by the :data:`SCALE_RATIO` rule.

    Parameters
    ----------
    c_train : array, shape (n, m), or None
        Training targets, physical units; None gives ``"global"``.
    """
    if c_train is None:
        return "global"
    _, std = output_statistics(np.asarray(c_train, dtype=np.float64))
    std = std[std > 0]
    if std.size < 2:
        return "global"
    return "per_output" if std.max() > SCALE_RATIO * std.min() else "global"


def selection_score(c_train: Any, c_validation: Any, shift: Any = None) -> str:
    """``"scale_free"`` when the per-sample relative error is ill-conditioned on the training
    or the validation targets (n, m) (``shift`` (m,) as in the metric), else ``"relative"``."""
    for c in (c_train, c_validation):
        if c is not None and conditioning(np.asarray(c), shift)["ill_conditioned"]:
            return "scale_free"
    return "relative"


def normalised_targets(c_train: Any, scale_targets: str) -> np.ndarray:
    """Centred training targets scaled as the normaliser will scale them.

    Parameters
    ----------
    c_train : array, shape (n, m)
    scale_targets : "global" or "per_output"

    Returns
    -------
    numpy.ndarray, shape (n, m)
        Per-output mean removed; divided by the per-output scales (``"per_output"``) or left
        in physical units (a common scale does not change relative floors).
    """
    c = np.asarray(c_train, dtype=np.float64)
    c = c - c.mean(axis=0)
    if scale_targets == "per_output":
        c = c / per_output_scales(torch.as_tensor(c)).numpy()
    return c


def projection_floor(c_centred: np.ndarray) -> np.ndarray:
    """Relative Frobenius norm left outside the leading k principal directions, k = 0 .. m.

    Parameters
    ----------
    c_centred : numpy.ndarray, shape (n, m)
        Centred (normalised) training targets.

    Returns
    -------
    numpy.ndarray, shape (min(n, m) + 1,)
        ``floor[k] = ||C - C P_k P_k^T||_F / ||C||_F`` (1 at k = 0, 0 at full rank).
    """
    s = np.linalg.svd(c_centred, compute_uv=False)
    energy = s**2
    total = energy.sum()
    if not total > 0:
        return np.zeros(s.size + 1)
    tail = np.concatenate([np.cumsum(energy[::-1])[::-1], [0.0]])
    return np.sqrt(np.clip(tail / total, 0.0, None))


def spectrum_width(c_train: Any, scale_targets: str, tol: float, lower: int, upper: int
                   ) -> int:
    """Smallest width in [lower, upper] whose projection floor is at most ``tol``.

    Parameters
    ----------
    c_train : array, shape (n, m)
        Training targets, physical units.
    scale_targets : "global" or "per_output"
        The normaliser's target scaling (the floor is measured in its units).
    tol : float
        Largest accepted floor (relative Frobenius norm).
    lower, upper : int
        Bounds of the width.

    Returns
    -------
    int
        ``upper`` when no width up to it reaches ``tol``.
    """
    floor = projection_floor(normalised_targets(c_train, scale_targets))
    ok = np.flatnonzero(floor <= tol)
    width = int(ok[0]) if ok.size else upper
    return int(min(max(width, lower), upper))


def data_width(n_train: int, n_out: int, n_in: int, n_steps: int, lower: int = MIN_WIDTH,
               upper: int = MAX_WIDTH) -> int:
    """Widest Neural ODE (``n_steps`` steps) with no more weights than training target values
    (``n_train * n_out``), within [lower, upper].

    Parameters
    ----------
    n_train, n_out : int
        Training samples and outputs.
    n_in : int
        Network inputs (after any encoding).
    n_steps : int
        Time steps of the finest level (the weights live on its n_steps + 1 nodes).
    """
    from train.resources import parameter_count

    values = n_train * n_out
    width = lower
    for w in range(lower, upper + 1):
        if parameter_count("neural_ode", n_in, w, n_steps) <= values:
            width = w
    return width


def default_width(data: Any, scale_targets: str, n_in: int | None, n_steps: int) -> int:
    """The default preset's width for a problem other than CDR and DCR (module docstring);
    :data:`FALLBACK_WIDTH` without data."""
    if data is None or n_in is None:
        return FALLBACK_WIDTH
    c = data.c["train"]
    return max(spectrum_width(c, scale_targets, SPECTRUM_TOL, MIN_WIDTH, MAX_WIDTH),
               data_width(c.shape[0], c.shape[1], n_in, n_steps))
