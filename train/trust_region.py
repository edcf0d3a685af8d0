"""Gauss-Newton-Krylov trust-region method (GNvpro sections 2.3-2.4).

Each iteration builds an Arnoldi factorisation ``H Q_r = Q_{r+1} H_r`` of the Gauss-Newton
Hessian ``H`` started at the negative gradient (eq. 2.10), with the rank chosen adaptively by
the GMRES residual estimate ``min_z ||H_r z - beta e_1|| / beta <= tol`` or ``r = r_max``. The
projected subproblem ``z(lambda) = argmin 1/2 ||H_r z - beta e_1||^2 + lambda/2 ||z||^2`` is
solved with the SVD of the small matrix H_r, and lambda >= 0 is the smallest shift with
``||z(lambda)|| <= Delta`` (scalar root finding with scipy's brentq on the bracket
[0, sigma_max beta / Delta]). The trial step ``Q_r z`` is accepted or rejected by the ratio rho
of actual to predicted reduction of the Gauss-Newton model; a rejected step re-solves the
subproblem with the smaller radius and the same Krylov basis.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from scipy.optimize import brentq

from train.errors import NonFiniteTrainingError
from train.varpro import WorkCounter


class GNProblem(Protocol):
    """What the trust-region method needs from a (reduced or full) least-squares problem."""

    @property
    def counter(self) -> WorkCounter: ...
    @property
    def size(self) -> int: ...

    def evaluate(self, x: torch.Tensor) -> Any: ...
    def gradient(self, state) -> torch.Tensor: ...
    def gn_hvp(self, state, v: torch.Tensor) -> torch.Tensor: ...


@dataclass
class KrylovBasis:
    """Arnoldi factorisation H Q[:, :r] = Q H_r (eq. 2.10).

    Attributes
    ----------
    Q : (N, r) orthonormal columns (the (r+1)-st vector is not kept)
    H : (r + 1, r) numpy upper Hessenberg matrix
    beta : float, norm of the starting vector
    residual : float, relative GMRES residual estimate at rank r
    """

    Q: torch.Tensor
    H: np.ndarray
    beta: float
    residual: float

    @property
    def rank(self) -> int:
        return self.H.shape[1]


def arnoldi(matvec: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, r_max: int,
            tol: float) -> KrylovBasis:
    """Arnoldi with modified Gram-Schmidt and one re-orthogonalisation pass.

    Parameters
    ----------
    matvec : callable
        v -> H v for a symmetric positive semi-definite H (float64 vectors of shape (N,)).
    b : torch.Tensor, shape (N,)
        Starting vector (the negative gradient), nonzero.
    r_max : int
        Maximum rank.
    tol : float
        Stop when ``min_z ||H_r z - beta e_1|| / beta <= tol`` (GMRES residual estimate).
    """
    beta = float(torch.linalg.vector_norm(b))
    Q = [b / beta]
    H = np.zeros((r_max + 1, r_max))
    rhs = np.zeros(r_max + 1)
    rhs[0] = beta
    residual = 1.0
    r = 0
    for k in range(r_max):
        w = matvec(Q[k])
        for _ in range(2):                    # "twice is enough"
            for j in range(k + 1):
                hjk = float(Q[j] @ w)
                H[j, k] += hjk
                w = w - hjk * Q[j]
        H[k + 1, k] = float(torch.linalg.vector_norm(w))
        if not np.isfinite(H[: k + 2, k]).all():
            raise NonFiniteTrainingError(
                "the Gauss-Newton Hessian-vector products are not finite (the Jacobian of the "
                "network overflows): check model.final_time, model.init_scale, model.dtype and "
                "the scaling of the data")
        r = k + 1
        z = np.linalg.lstsq(H[: r + 1, :r], rhs[: r + 1], rcond=None)[0]
        residual = float(np.linalg.norm(H[: r + 1, :r] @ z - rhs[: r + 1]) / beta)
        if H[k + 1, k] <= 1e-14 * abs(H[k, k]) or residual <= tol:
            break
        Q.append(w / H[k + 1, k])
    return KrylovBasis(Q=torch.stack(Q[:r], dim=1), H=H[: r + 1, :r].copy(), beta=beta,
                       residual=residual)


class ProjectedSubproblem:
    """min_z 1/2 ||H_r z - beta e_1||^2 s.t. ||z|| <= Delta via the SVD of H_r.

    Parameters
    ----------
    basis : KrylovBasis
    """

    def __init__(self, basis: KrylovBasis) -> None:
        U, s, Vt = np.linalg.svd(basis.H, full_matrices=False)
        keep = s > s[0] * 1e-13 * max(basis.H.shape) if s.size and s[0] > 0 else s > 0
        self.s, self.Vt = s[keep], Vt[keep]
        self.c = basis.beta * U[0, keep]          # U^T (beta e_1)
        self.beta = basis.beta
        self.Hsq = basis.H[:-1, :]               # Q_r^T H Q_r

    def z(self, lam: float) -> np.ndarray:
        """Tikhonov-regularised solution z(lambda), shape (r,)."""
        return self.Vt.T @ (self.s * self.c / (self.s**2 + lam))

    def solve(self, radius: float | None) -> tuple[np.ndarray, float, bool]:
        """Smallest lambda >= 0 with ||z(lambda)|| <= radius.

        Returns
        -------
        z : (r,) step coefficients
        lam : the Tikhonov shift
        on_boundary : whether the constraint is active
        """
        z0 = self.z(0.0)
        if radius is None or np.linalg.norm(z0) <= radius:
            return z0, 0.0, False
        lam_hi = self.s[0] * self.beta / radius   # ||z(lam)|| <= s_max beta / lam
        lam = brentq(lambda t: np.linalg.norm(self.z(t)) - radius, 0.0, lam_hi,
                     xtol=1e-15 * lam_hi, rtol=1e-12)
        return self.z(lam), float(lam), True

    def predicted_reduction(self, z: np.ndarray) -> float:
        """-(g^T p + 1/2 p^T H p) for p = Q_r z, with g = -beta q_1 (eq. 2.11)."""
        return float(self.beta * z[0] - 0.5 * z @ (self.Hsq @ z))


@dataclass
class TRSettings:
    """Settings of the Gauss-Newton-Krylov trust region (paper code defaults)."""

    r_max: int = 20
    krylov_tol: float = 1e-2
    max_iter: int = 10_000
    grad_tol: float = 0.0          # absolute tolerance on ||grad||
    grad_rtol: float = 1e-10       # relative to ||grad|| at the level's start
    eta_reject: float = 1e-4       # reject if rho < eta_reject
    eta_shrink: float = 0.1        # accept and halve the radius if rho < eta_shrink
    eta_grow: float = 0.75         # grow by `grow` if rho > eta_grow on the boundary
    grow: float = 1.5
    min_radius: float = 1e-14


@dataclass
class TRResult:
    """Outcome of :func:`minimize_trust_region`."""

    x: torch.Tensor
    state: Any
    n_iter: int
    stop_reason: str
    radius: float | None = None      # trust-region radius at the end (None: no step tried)


def minimize_trust_region(problem: GNProblem, x0: torch.Tensor, budget: float,
                          settings: TRSettings,
                          callback: Callable[[dict, torch.Tensor, object], str | None]
                          | None = None, *, radius0: float | None = None,
                          deadline: float | None = None) -> TRResult:
    """Gauss-Newton-Krylov trust region on ``1/2 ||r(x)||^2`` within a work-unit budget.

    Parameters
    ----------
    problem : GNProblem
        Counts its own work units in ``problem.counter``.
    x0 : torch.Tensor, shape (N,), float64
    budget : float
        Work units this call may spend (the Krylov rank is capped so it is never exceeded).
    settings : TRSettings
    callback : callable, optional
        ``callback(record, x, state)`` after the initial point and every accepted step;
        ``record`` has keys iteration, loss, grad_norm, step_norm, radius, rho, krylov_rank,
        rejected. A returned string stops the iteration with that stop reason (e.g.
        validation stagnation).
    radius0 : float, optional
        Initial trust-region radius (e.g. carried over from the previous level); default the
        norm of the first full Gauss-Newton step.
    deadline : float, optional
        ``time.perf_counter()`` value by which the call must return (``--time-budget``):
        before each iteration the seconds per work unit of the previous iteration (callback
        included; at first those of the initial evaluation) predict its duration; the Krylov
        rank is capped to fit, and the call stops ("time budget") when not even rank 1 fits.
        So it overruns only by the error of that prediction (at most about one iteration).

    Returns
    -------
    TRResult
    """
    counter = problem.counter
    start = counter.units

    def emit(record: dict) -> str | None:
        return callback(record, x, state) if callback is not None else None

    x = x0.clone()
    t_iter, wu_iter = time.perf_counter(), counter.units
    state = problem.evaluate(x)
    g = problem.gradient(state)
    gnorm0 = gnorm = float(torch.linalg.vector_norm(g))
    radius: float | None = radius0
    stop = emit({"iteration": 0, "loss": state.loss, "grad_norm": gnorm})
    it, reason = 0, "budget"
    sec_per_wu = (time.perf_counter() - t_iter) / max(counter.units - wu_iter, 1e-12)
    while True:
        if stop:
            reason = stop
            break
        if gnorm <= max(settings.grad_tol, settings.grad_rtol * gnorm0) or not math.isfinite(
                gnorm):
            reason = "gradient tolerance" if math.isfinite(gnorm) else "non-finite gradient"
            break
        if it >= settings.max_iter:
            reason = "iteration limit"
            break
        # 2 WU per Krylov step; keep 2 WU for the trial forward pass and the new gradient
        r_allowed = min(settings.r_max, int((budget - (counter.units - start) - 2) // 2))
        if r_allowed < 1:
            reason = "budget"
            break
        if deadline is not None:         # the same for the time left (2 WU per Krylov step)
            r_time = int(((deadline - time.perf_counter()) / sec_per_wu - 2) // 2)
            if r_time < 1:
                reason = "time budget"
                break
            r_allowed = min(r_allowed, r_time)
        t_iter, wu_iter = time.perf_counter(), counter.units
        basis = arnoldi(functools.partial(problem.gn_hvp, state), -g, r_allowed,
                        settings.krylov_tol)
        sub = ProjectedSubproblem(basis)
        if radius is None:                       # initial radius: the first full GN step
            radius = float(np.linalg.norm(sub.z(0.0)))
        rejected = 0
        while True:
            z, _, on_boundary = sub.solve(radius)
            step = basis.Q @ torch.as_tensor(z, dtype=basis.Q.dtype, device=basis.Q.device)
            step_norm = float(np.linalg.norm(z))
            pred = sub.predicted_reduction(z)
            trial = problem.evaluate(x + step)
            ared = state.loss - trial.loss
            rho = ared / pred if pred > 0 and math.isfinite(trial.loss) else -math.inf
            if rho >= settings.eta_reject:
                break
            rejected += 1
            radius = 0.5 * min(radius, step_norm)
            if radius < settings.min_radius or counter.units - start + 2 > budget:
                reason = "trust region collapsed" if radius < settings.min_radius else "budget"
                return TRResult(x, state, it, reason, radius)
            if deadline is not None and time.perf_counter() + sec_per_wu > deadline:
                return TRResult(x, state, it, "time budget", radius)
        if rho < settings.eta_shrink:
            radius *= 0.5
        elif rho > settings.eta_grow and on_boundary:
            radius *= settings.grow
        x, state = x + step, trial
        g = problem.gradient(state)
        gnorm = float(torch.linalg.vector_norm(g))
        it += 1
        stop = emit({"iteration": it, "loss": state.loss, "grad_norm": gnorm,
                     "step_norm": step_norm, "radius": radius, "rho": rho,
                     "krylov_rank": basis.rank, "rejected": rejected})
        sec_per_wu = (time.perf_counter() - t_iter) / max(counter.units - wu_iter, 1e-12)
    return TRResult(x, state, it, reason, radius)
