"""GNvpro: Gauss-Newton-Krylov trust region on the VarPro-reduced problem (GNvpro 2.4)."""

from __future__ import annotations

import torch

from surrogate.separable import SeparableModel
from train.base import Callback, Optimizer
from train.trust_region import TRSettings, minimize_trust_region
from train.varpro import VarProProblem, WorkCounter, output_basis


class GNvpro(Optimizer):
    """Minimise Phi_red(theta) (eq. 2.6) with W(theta) eliminated by the SVD (eq. 2.8).

    Work units per iteration (GNvpro section 3.1): 2 per Krylov step (J v and J^T w), one
    forward pass per trial point and one backward pass for the gradient at the new point.

    Parameters
    ----------
    alpha1, alpha2, max_work_units
        See :class:`train.base.Optimizer`.
    r_max : int
        Maximum Krylov rank (20).
    krylov_tol : float
        Relative GMRES residual tolerance of the Krylov solve (1e-2).
    max_iter : int
        Iteration limit per level.
    grad_tol, grad_rtol : float
        Stop when ||grad|| <= max(grad_tol, grad_rtol ||grad_0||).
    carry_radius : bool
        Start each level after the first with the trust-region radius the previous level
        ended with (continuation), instead of the norm of the first full Gauss-Newton step.
        :meth:`reset` forgets it (the multilevel trainer calls it before its first level).
    output_basis_tol : float
        Fit the principal-component coefficients of the targets instead of the targets
        (:func:`train.varpro.output_basis`: the fewest components that leave out at most this
        relative Frobenius norm of C; 0 = all outputs, the paper's method). The saved W is
        mapped back to all outputs.
    """

    method = "gnvpro"

    def __init__(self, *, alpha1: float = 1e-10, alpha2: float = 1e-10,
                 max_work_units: float = 200.0, r_max: int = 20, krylov_tol: float = 1e-2,
                 max_iter: int = 10_000, grad_tol: float = 0.0, grad_rtol: float = 1e-10,
                 carry_radius: bool = False, output_basis_tol: float = 0.0) -> None:
        super().__init__(alpha1=alpha1, alpha2=alpha2, max_work_units=max_work_units)
        self.output_basis_tol = float(output_basis_tol)
        self._basis: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self.r_max = r_max
        self.krylov_tol = krylov_tol
        self.max_iter = max_iter
        self.grad_tol = grad_tol
        self.grad_rtol = grad_rtol
        self.carry_radius = carry_radius
        self.radius_: float | None = None
        self.deadline: float | None = None     # time.perf_counter() value (--time-budget)

    def reset(self) -> None:
        """Forget the radius carried between levels."""
        self.radius_ = None

    def _settings(self) -> TRSettings:
        return TRSettings(r_max=self.r_max, krylov_tol=self.krylov_tol, max_iter=self.max_iter,
                          grad_tol=self.grad_tol, grad_rtol=self.grad_rtol)

    def basis(self, C: torch.Tensor) -> torch.Tensor | None:
        """The output basis of ``C`` (n, m) (computed once per data, kept across levels)."""
        if self.output_basis_tol <= 0:
            return None
        if self._basis is None or self._basis[0] is not C:
            self._basis = (C, output_basis(C, self.output_basis_tol))
        return self._basis[1]

    def _run(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor,
             counter: WorkCounter, start: float, callback: Callback) -> str:
        problem = VarProProblem(model.features, Y, C, self.alpha1, self.alpha2, counter,
                                basis=self.basis(C))

        def on_iterate(record: dict, x: torch.Tensor, state) -> str | None:
            problem.store(model, state)
            return callback(record, model)

        budget = self.max_work_units - (counter.units - start)
        result = minimize_trust_region(problem, problem.flat.get(), budget, self._settings(),
                                       on_iterate,
                                       radius0=self.radius_ if self.carry_radius else None,
                                       deadline=self.deadline)
        self.radius_ = result.radius
        problem.store(model, result.state)
        return result.stop_reason
