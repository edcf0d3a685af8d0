"""Sampled limited-memory Tikhonov (slimTik) updates of the linear weights with sampled GCV
(slimTrain section 3.1, eqs. 3.2-3.8), exploiting the Kronecker structure of a dense layer.

Layout (as in :mod:`train.varpro`): samples are rows. A batch has features ``Z_a`` of shape
(b, p) (with the column of ones, p = width + 1) and targets ``C`` of shape (b, m); the linear
weights are ``W`` of shape (m, p) and the prediction is ``Z_a W^T``. In the paper's
vectorised form ``w = vec(W)`` and the batch matrix is ``A_k = Z_a (x) I_m`` with
``b * m`` rows (slimTrain section 3.1), so every target row of W solves a least-squares
problem with the same (b, p) feature matrix.

One slimTik step (eq. 3.7) with memory ``M_k`` (eq. 3.8: the features of the last r batches,
as they were computed, with their old theta) and running sum ``s = sum_{i<k} Lambda_i`` solves
the normal equations

    W_k (H + (s + Lambda) I) = W_{k-1} (Z_M^T Z_M + s I) + C^T Z_a,
    H = Z_M^T Z_M + Z_a^T Z_a,

i.e. ``W_k = W_{k-1} - (R_0^T Z_a + Lambda W_{k-1}) (H + (s + Lambda) I)^{-1}`` with
``R_0 = Z_a W_{k-1}^T - C`` (the update form eq. 3.3 with ``T_k`` of eq. 3.5). One thin SVD of
the stacked (r + 1) b x p feature matrix ``[Z_M; Z_a] = U diag(sigma) V^T`` gives
``H = V diag(sigma^2) V^T`` and serves both the update and every evaluation of the sGCV
function (eq. 3.4), whose row count is ``n = b * m``:

    sGCV(Lambda) = n ||Z_a W_k(Lambda)^T - C||_F^2 / (n - m tr(Z_a (H + (s + Lambda) I)^{-1}
                   Z_a^T))^2,

because ``tr(A_k T_k A_k^T) = m tr(Z_a (H + L I)^{-1} Z_a^T)`` for ``A_k = Z_a (x) I_m``.

The sGCV minimiser is searched over log10 |Lambda| on nested log-spaced grids
(:func:`select_lambda`: a coarse grid over the bounds, refined twice around the best point;
each grid is one vectorised evaluation): positive Lambda in ``[lambda_min, lambda_max]`` and,
unless switched off, negative Lambda down to ``-s / 2``, so that the accumulated
regularisation can also decrease while the running sum stays positive (the first Lambda is
positive, and no step more than halves the sum). Every system is therefore well posed even
when ``(r + 1) b < p``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class SlimTikStep:
    """One factorised slimTik step (eqs. 3.5-3.7) for all Lambda at once.

    Attributes
    ----------
    sigma : (q,) float64
        Singular values of the stacked features [Z_M; Z_a], q = min((r + 1) b, p).
    V : (p, q) float64
        Right singular vectors.
    U_b : (b, q) float64
        Rows of the left singular vectors that belong to the current batch (Z_a = U_b
        diag(sigma) V^T).
    R0 : (b, m) float64
        Residual of the previous weights on the current batch, Z_a W_{k-1}^T - C.
    P : (q, m) float64
        V^T Z_a^T R0.
    Q : (q, m) float64
        V^T W_{k-1}^T.
    W_prev : (m, p) float64
    lambda_sum : float
        Sum of the previous Lambdas, s = sum_{i<k} Lambda_i (>= 0).
    """

    sigma: torch.Tensor
    V: torch.Tensor
    U_b: torch.Tensor
    R0: torch.Tensor
    P: torch.Tensor
    Q: torch.Tensor
    W_prev: torch.Tensor
    lambda_sum: float

    @property
    def n_rows(self) -> int:
        """Rows of the vectorised batch system A_k: batch size x number of targets."""
        return self.R0.shape[0] * self.R0.shape[1]

    def weights(self, Lambda: float) -> torch.Tensor:
        """W_k(Lambda) of eq. 3.7, shape (m, p), float64.

        Raises
        ------
        ValueError
            If s + Lambda <= 0 (the Tikhonov term must stay positive).
        """
        L = self.lambda_sum + float(Lambda)
        if not L > 0:
            raise ValueError(f"Lambda = {Lambda!r}: the running sum of the Lambdas "
                             f"({L!r}) must stay positive")
        # (H + L I)^{-1} G^T with G^T = Z_a^T R0 + Lambda W^T = V (P + Lambda Q) + Lambda
        # (I - V V^T) W^T: eigen-part through the SVD, complement of range(V) scaled by 1/L
        inner = (self.P + Lambda * self.Q) / (self.sigma**2 + L)[:, None]
        step_T = self.V @ inner
        Wt = self.W_prev.T
        step_T = step_T + (Lambda / L) * (Wt - self.V @ self.Q)
        return (Wt - step_T).T

    def sgcv(self, Lambdas: np.ndarray) -> np.ndarray:
        """sGCV function (eq. 3.4) with n = b m rows, for an array of Lambda values.

        Parameters
        ----------
        Lambdas : array, shape (g,)
            Positive candidates (s + Lambda > 0).

        Returns
        -------
        numpy.ndarray, shape (g,)
        """
        sigma = self.sigma.cpu().numpy()
        U_b = self.U_b.cpu().numpy()
        R0, P, Q = (t.cpu().numpy() for t in (self.R0, self.P, self.Q))
        return _sgcv(np.asarray(Lambdas, dtype=np.float64), self.lambda_sum, sigma, U_b, R0,
                     P, Q)


def _sgcv(Lambdas: np.ndarray, s: float, sigma: np.ndarray, U_b: np.ndarray, R0: np.ndarray,
          P: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """sGCV values from the SVD factors (numpy, float64), see :meth:`SlimTikStep.sgcv`."""
    b, m = R0.shape
    n = b * m
    L = s + Lambdas                                                   # (g,)
    filt = sigma[None, :] / (sigma[None, :] ** 2 + L[:, None])        # (g, q)
    # R(Lambda) = R0 - U_b diag(sigma / (sigma^2 + L)) (P + Lambda Q)
    coef = filt[:, :, None] * (P[None] + Lambdas[:, None, None] * Q[None])   # (g, q, m)
    R = R0[None] - U_b[None] @ coef                                   # (g, b, m)
    rss = (R * R).sum(axis=(1, 2))
    lev = (U_b**2).sum(axis=0)                                        # (q,)
    trace = m * (filt * sigma[None, :] * lev[None, :]).sum(axis=1)    # tr(A_k T_k A_k^T)
    return n * rss / (n - trace) ** 2


def factor_step(Z_mem: torch.Tensor | None, Z_a: torch.Tensor, C: torch.Tensor,
                W_prev: torch.Tensor, lambda_sum: float) -> SlimTikStep:
    """Factorise one slimTik step: one thin SVD of the stacked features [Z_M; Z_a].

    Parameters
    ----------
    Z_mem : torch.Tensor, shape (r b, p), or None
        Memory features M_k (eq. 3.8), float64; None or zero rows for r = 0.
    Z_a : torch.Tensor, shape (b, p)
        Current batch features with the column of ones.
    C : torch.Tensor, shape (b, m)
        Current batch targets.
    W_prev : torch.Tensor, shape (m, p)
        W_{k-1}.
    lambda_sum : float
        s = sum_{i<k} Lambda_i.

    Returns
    -------
    SlimTikStep
    """
    Z_a = Z_a.to(torch.float64)
    C = C.to(torch.float64)
    W_prev = W_prev.to(torch.float64)
    stacked = Z_a if Z_mem is None or Z_mem.shape[0] == 0 else torch.cat(
        [Z_mem.to(torch.float64), Z_a])
    U, sigma, Vh = torch.linalg.svd(stacked, full_matrices=False)
    V = Vh.T
    U_b = U[-Z_a.shape[0]:]
    R0 = Z_a @ W_prev.T - C
    P = sigma[:, None] * (U_b.T @ R0)                                 # V^T Z_a^T R0
    Q = V.T @ W_prev.T
    return SlimTikStep(sigma, V, U_b, R0, P, Q, W_prev, float(lambda_sum))


def _grid_search(f, lo: float, hi: float, points: int, refinements: int
                 ) -> tuple[float, float]:
    """Minimise f(x) (vectorised) on nested grids in [lo, hi]; returns (x, f(x))."""
    best_x, best_v = lo, math.inf
    for _ in range(refinements + 1):
        x = np.linspace(lo, hi, points)
        values = f(x)
        values = np.where(np.isfinite(values), values, np.inf)
        i = int(np.argmin(values))
        if values[i] < best_v:
            best_x, best_v = float(x[i]), float(values[i])
        lo, hi = float(x[max(i - 1, 0)]), float(x[min(i + 1, points - 1)])
    return best_x, best_v


def select_lambda(step: SlimTikStep, lambda_min: float = 1e-8, lambda_max: float = 1e4,
                  grid_points: int = 25, refinements: int = 2,
                  allow_negative: bool = True) -> float:
    """Lambda_k = argmin sGCV (eq. 3.4), searched over log10 |Lambda|.

    Candidates: ``Lambda in [lambda_min, lambda_max]`` and, with ``allow_negative``, also
    ``Lambda in [-s / 2, -lambda_min]`` (s = sum of the previous Lambdas; slimTik only needs
    ``s + Lambda > 0``, eq. 3.2): a step may lower the accumulated regularisation but at most
    halve it, so the running sum stays positive. Each branch is searched on nested log-spaced
    grids, each one vectorised evaluation: ``grid_points`` values over the branch, then
    ``refinements`` times ``grid_points`` values between the two neighbours of the best value
    (for the positive branch with the defaults, spacings of 0.5, 0.042 and 0.0035 decades).
    Non-finite values count as +inf; ties go to the smaller |Lambda|, positive first.

    Parameters
    ----------
    step : SlimTikStep
    lambda_min, lambda_max : float
        Bounds of |Lambda|, 0 < lambda_min <= lambda_max.
    grid_points : int
        At least 3.
    refinements : int
        Number of refined grids per branch (>= 0).
    allow_negative : bool
        Also search negative Lambda (see above).

    Returns
    -------
    float
    """
    if not 0 < lambda_min <= lambda_max:
        raise ValueError(f"Lambda bounds [{lambda_min!r}, {lambda_max!r}]: need "
                         "0 < lambda_min <= lambda_max")
    args = (step.lambda_sum, step.sigma.cpu().numpy(), step.U_b.cpu().numpy(),
            step.R0.cpu().numpy(), step.P.cpu().numpy(), step.Q.cpu().numpy())
    g, n_ref = max(int(grid_points), 3), max(int(refinements), 0)

    def branch(sign: float):
        def f(x):
            with np.errstate(all="ignore"):
                return _sgcv(sign * 10.0**x, *args)
        return f

    lo, hi = math.log10(lambda_min), math.log10(lambda_max)
    x, v = _grid_search(branch(1.0), lo, hi, g, n_ref)
    best = 10.0**x
    half = 0.5 * step.lambda_sum
    if allow_negative and half > lambda_min:
        xn, vn = _grid_search(branch(-1.0), lo, min(math.log10(half), hi), g, n_ref)
        if vn < v:
            best = -(10.0**xn)
    return float(best)


class SlimTik:
    """slimTik solver state: memory of past features, running Lambda sum, current W.

    Parameters
    ----------
    W0 : torch.Tensor, shape (m, p)
        Initial weights (converted to float64).
    memory : int
        Memory depth r >= 0 (number of past batches whose features are kept).
    lambda_min, lambda_max : float
        sGCV search bounds (see :func:`select_lambda`).
    lambda_fixed : float, optional
        Use this Lambda at every step instead of sGCV.
    grid_points : int
        Grid of the sGCV search.
    allow_negative : bool
        Let sGCV choose negative Lambdas (never below minus half the running sum).

    Attributes
    ----------
    W : (m, p) float64
    lambda_sum : float
        Sum of all Lambdas so far.
    lambdas : list of float
        Lambda_k of every step.
    """

    def __init__(self, W0: torch.Tensor, *, memory: int = 0, lambda_min: float = 1e-8,
                 lambda_max: float = 1e4, lambda_fixed: float | None = None,
                 grid_points: int = 25, allow_negative: bool = True) -> None:
        if memory < 0:
            raise ValueError(f"memory depth r = {memory!r} must be >= 0")
        if lambda_fixed is not None and not lambda_fixed > 0:
            raise ValueError(f"lambda_fixed = {lambda_fixed!r} must be positive")
        self.W = W0.detach().to(torch.float64).clone()
        self.memory = int(memory)
        self.lambda_min, self.lambda_max = float(lambda_min), float(lambda_max)
        self.lambda_fixed = lambda_fixed
        self.grid_points = int(grid_points)
        self.allow_negative = bool(allow_negative)
        self.lambda_sum = 0.0
        self.lambdas: list[float] = []
        self.mem: deque[torch.Tensor] = deque(maxlen=self.memory if self.memory else 0)

    def memory_features(self) -> torch.Tensor | None:
        """Stacked memory M_k (eq. 3.8), shape (rows, p), or None if empty."""
        return torch.cat(list(self.mem)) if self.mem else None

    def update(self, Z_a: torch.Tensor, C: torch.Tensor) -> float:
        """One step (Algorithm 3.1, lines 9-11): choose Lambda_k, set W_k, push Z_a into the
        memory. Returns Lambda_k.

        Parameters
        ----------
        Z_a : torch.Tensor, shape (b, p)
            Features of the current batch at theta_{k-1} (detached).
        C : torch.Tensor, shape (b, m)
        """
        Z_a = Z_a.detach().to(torch.float64)
        step = factor_step(self.memory_features(), Z_a, C, self.W, self.lambda_sum)
        if self.lambda_fixed is not None:
            Lambda = float(self.lambda_fixed)
        else:
            Lambda = select_lambda(step, self.lambda_min, self.lambda_max, self.grid_points,
                                   allow_negative=self.allow_negative)
        self.W = step.weights(Lambda)
        self.lambda_sum += Lambda
        self.lambdas.append(Lambda)
        if self.memory:
            self.mem.append(Z_a.clone())
        return Lambda

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Resumable state: (arrays, JSON-serialisable values)."""
        arrays = {"W": self.W.cpu(), "lambdas": torch.tensor(self.lambdas, dtype=torch.float64)}
        for i, z in enumerate(self.mem):
            arrays[f"mem{i}"] = z.cpu()
        return arrays, {"lambda_sum": self.lambda_sum, "n_mem": len(self.mem)}

    def load_state(self, arrays: dict[str, torch.Tensor], values: dict) -> None:
        """Inverse of :meth:`state`."""
        device = self.W.device
        self.W = arrays["W"].to(dtype=torch.float64, device=device).clone()
        self.mem.clear()
        for i in range(int(values["n_mem"])):
            self.mem.append(arrays[f"mem{i}"].to(dtype=torch.float64, device=device))
        self.lambda_sum = float(values["lambda_sum"])
        self.lambdas = arrays["lambdas"].to(torch.float64).tolist()
