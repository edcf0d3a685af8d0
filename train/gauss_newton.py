"""Full Gauss-Newton baseline: the trust-region method of GNvpro on (theta, W) jointly.

No variable projection: W is an unknown of the outer problem (GNvpro eq. 2.2, Algorithm 2.1
left), initialised by the VarPro solve on the first level (GNvpro section 3.1). The
residual is ``r(theta, W) = [vec(Z_a W^T - C) / sqrt(n); sqrt(alpha2) vec W;
sqrt(alpha1) theta]`` and the Gauss-Newton Hessian is ``J^T J``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from surrogate.separable import SeparableModel, augment
from train.base import Callback
from train.gnvpro import GNvpro
from train.trust_region import minimize_trust_region
from train.varpro import FlatParams, Linearization, WorkCounter


@dataclass
class FullState:
    """Forward pass at x = [theta; vec W]."""

    theta: torch.Tensor     # (N_theta,) float64
    W: torch.Tensor         # (m, p) float64
    Z_a: torch.Tensor       # (n, p) float64
    R: torch.Tensor         # (n, m) float64
    loss: float
    lin: Linearization


class FullProblem:
    """Least-squares problem in x = [theta; vec W] (row-major vec).

    Parameters
    ----------
    features : nn.Module
        Feature extractor F.
    n_out : int
        Number of targets m.
    Y, C : torch.Tensor
        Normalised training data, shapes (n, n_in) and (n, m).
    alpha1, alpha2 : float
    counter : WorkCounter
    """

    def __init__(self, features, n_out: int, Y: torch.Tensor, C: torch.Tensor,
                 alpha1: float, alpha2: float, counter: WorkCounter) -> None:
        self.flat = FlatParams(features)
        self.Y = Y.to(dtype=self.flat.dtype, device=self.flat.device)
        self.C = C.to(dtype=torch.float64, device=self.flat.device)
        self.n = self.Y.shape[0]
        self.m, self.p = n_out, features.width + 1
        self.alpha1, self.alpha2 = float(alpha1), float(alpha2)
        self.counter = counter
        self._F = self.flat.function(self.Y)
        self.size = self.flat.size + self.m * self.p

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (theta, W)."""
        return x[: self.flat.size], x[self.flat.size:].reshape(self.m, self.p)

    def join(self, theta: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        """(theta, W) -> x, float64."""
        return torch.cat([theta.to(torch.float64), W.reshape(-1).to(torch.float64)])

    def evaluate(self, x: torch.Tensor) -> FullState:
        """Forward pass and Phi(W, theta) (eq. 2.2). 1 WU."""
        theta, W = self.split(x)
        lin = Linearization(self._F, theta.to(self.flat.dtype))
        self.counter.add(1)
        Z_a = augment(lin.Z.detach().to(torch.float64))
        R = Z_a @ W.T - self.C
        loss = (0.5 * (R**2).sum() / self.n + 0.5 * self.alpha2 * (W**2).sum()
                + 0.5 * self.alpha1 * (theta**2).sum())
        return FullState(theta, W, Z_a, R, float(loss), lin)

    def _theta_vjp(self, state: FullState, Zbar_a: torch.Tensor) -> torch.Tensor:
        self.counter.add(1)
        return state.lin.vjp(Zbar_a[:, :-1].to(self.flat.dtype)).to(torch.float64)

    def gradient(self, state: FullState) -> torch.Tensor:
        """Gradient with respect to (theta, W). 1 WU."""
        g_theta = self._theta_vjp(state, state.R @ state.W / self.n) + self.alpha1 * state.theta
        g_W = state.R.T @ state.Z_a / self.n + self.alpha2 * state.W
        return self.join(g_theta, g_W)

    def gn_hvp(self, state: FullState, v: torch.Tensor) -> torch.Tensor:
        """J^T J v for the full model, with dG = dZ_a W^T + Z_a v_W^T kept factored. 2 WU."""
        v_theta, v_W = self.split(v)
        self.counter.add(1)
        dZ = state.lin.jvp(v_theta.to(self.flat.dtype)).to(torch.float64)
        dZ_a = torch.cat([dZ, torch.zeros_like(dZ[:, :1])], dim=1)
        W, Z_a = state.W, state.Z_a
        GW = dZ_a @ (W.T @ W) + Z_a @ (v_W.T @ W)                         # dG W
        GtZ = W @ (dZ_a.T @ Z_a) + v_W @ (Z_a.T @ Z_a)                    # dG^T Z_a
        h_theta = self._theta_vjp(state, GW / self.n) + self.alpha1 * v_theta
        return self.join(h_theta, GtZ / self.n + self.alpha2 * v_W)


class GaussNewton(GNvpro):
    """Gauss-Newton-Krylov trust region on the full problem (no VarPro); same settings and
    work-unit accounting as :class:`GNvpro`."""

    method = "gn"
    needs_linear_init = True

    def _run(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor,
             counter: WorkCounter, start: float, callback: Callback) -> str:
        problem = FullProblem(model.features, model.n_out, Y, C, self.alpha1, self.alpha2,
                              counter)

        def store(x: torch.Tensor) -> None:
            theta, W = problem.split(x)
            problem.flat.set(theta)
            with torch.no_grad():
                model.W.copy_(W.to(model.W.dtype))

        def on_iterate(record: dict, x: torch.Tensor, state) -> None:
            store(x)
            callback(record, model)

        x0 = problem.join(problem.flat.get(), model.W.detach())
        budget = self.max_work_units - (counter.units - start)
        result = minimize_trust_region(problem, x0, budget, self._settings(), on_iterate)
        store(result.x)
        return result.stop_reason
