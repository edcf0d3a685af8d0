"""Gaussian-likelihood posterior on a box: the target density of the inversion examples.

    log pi(y | d) = -||G(y) - d||^2 / (2 sigma^2) + const   for lower <= y <= upper,
                    -inf                                      otherwise

(uniform prior on the training parameter box, independent Gaussian noise of standard
deviation ``sigma`` on every observable). ``G`` is any model with the call shape of
:func:`surrogate.load` or :class:`surrogate.serving.pde_model.PDEModel`. The additive constant
``-m log(sigma sqrt(2 pi)) - log(box volume)`` is dropped.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from solvers.errors import InputError


class GaussianPosterior:
    """Log-posterior of a Gaussian likelihood with a uniform prior on a box.

    Parameters
    ----------
    model : callable
        ``model(y)`` (n, d) -> (n, m); for gradients also ``value_and_jacobian``.
    observed : array_like, shape (m,)
        Observed data d.
    sigma : float or array_like (m,)
        Noise standard deviation(s), > 0.
    lower, upper : array_like, shape (d,)
        Prior box.

    Raises
    ------
    solvers.errors.InputError
        (a ValueError) observed data of the wrong size or not finite, sigma not finite and
        > 0, or a box without lower < upper.
    """

    def __init__(self, model: Any, observed: Any, sigma: Any, lower: Any, upper: Any) -> None:
        self.model = model
        self.observed = np.asarray(observed, dtype=np.float64).ravel()
        m = int(getattr(model, "n_out", self.observed.size))
        if self.observed.size != m:
            raise InputError(f"observed data have {self.observed.size} values but the model "
                             f"has {m} outputs")
        if not np.isfinite(self.observed).all():
            raise InputError("observed data contain NaN or inf")
        sig = np.asarray(sigma, dtype=np.float64)
        if sig.ndim not in (0, 1) or (sig.ndim == 1 and sig.size != m):
            raise InputError(f"sigma must be a number or {m} numbers, got shape {sig.shape}")
        if not (np.isfinite(sig).all() and (sig > 0).all()):
            raise InputError(f"noise sigma must be finite and > 0, got {sigma!r}")
        self.sigma = sig
        self.lower = np.asarray(lower, dtype=np.float64)
        self.upper = np.asarray(upper, dtype=np.float64)
        if self.lower.shape != self.upper.shape or not (self.lower < self.upper).all():
            raise InputError("the prior box needs lower < upper in every parameter")
        self.n_in = self.lower.size

    def inside(self, y: np.ndarray) -> np.ndarray:
        """Boolean (n,): rows of y (n, d) inside the prior box."""
        return np.all((y >= self.lower) & (y <= self.upper), axis=-1)

    def log_prob(self, y: Any) -> np.ndarray | float:
        """Log-posterior (unnormalised) of y (n, d) -> (n,), or of one y (d,) -> float."""
        arr = np.atleast_2d(np.asarray(y, dtype=np.float64))
        out = np.full(arr.shape[0], -np.inf)
        ok = self.inside(arr)
        if ok.any():
            r = (self.model(arr[ok]) - self.observed) / self.sigma
            out[ok] = -0.5 * np.sum(r * r, axis=1)
        return float(out[0]) if np.ndim(y) == 1 else out

    def log_prob_and_grad(self, y: Any) -> tuple[float, np.ndarray]:
        """Log-posterior and its gradient at one y (d,) inside the box.

        Raises
        ------
        solvers.errors.InputError
            (a ValueError) y is outside the prior box (the density is -inf and has no
            gradient there).
        """
        v = np.asarray(y, dtype=np.float64)
        if not self.inside(v[None])[0]:
            raise InputError(f"y = {v.tolist()} is outside the prior box "
                             f"[{self.lower.tolist()}, {self.upper.tolist()}]")
        c, J = self.model.value_and_jacobian(v[None])
        r = (c[0] - self.observed) / self.sigma
        return float(-0.5 * r @ r), -(J[0].T @ (r / self.sigma))

    def gauss_newton_covariance(self, y: Any) -> np.ndarray:
        """Laplace (Gauss-Newton) covariance (J^T Sigma^-1 J)^-1 at y (d,), shape (d, d)."""
        J = self.model.jacobian(np.asarray(y, dtype=np.float64)[None])[0]
        Js = J / np.broadcast_to(self.sigma, (J.shape[0],))[:, None]
        return np.linalg.inv(Js.T @ Js)
