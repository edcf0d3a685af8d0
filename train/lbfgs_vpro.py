"""L-BFGSvpro: limited-memory BFGS on the VarPro-reduced objective (GNvpro section 3.1).

Follows Nocedal and Wright, Numerical Optimization (2nd ed.): two-loop recursion
(Algorithm 7.4) with the initial scaling gamma_k = s^T y / y^T y (eq. 7.20), and a line search
for the strong Wolfe conditions (Algorithms 3.5 and 3.6, cubic interpolation eq. 3.59).
Every trial point costs a function and a gradient evaluation, i.e. 2 work units.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any

import torch

from surrogate.separable import SeparableModel
from train.base import Callback, Optimizer
from train.varpro import VarProProblem, VarProState, WorkCounter


class _OutOfBudget(Exception):
    """Raised by the line-search evaluation when the work-unit budget is spent."""


Point = tuple[float, float, Any]   # (phi, phi', payload)


def _cubic_min(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float:
    """Minimiser of the cubic interpolating (f, f') at a and b (NW eq. 3.59), or bisection."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc >= 0 and all(map(math.isfinite, (d1, disc))):
        d2 = math.copysign(math.sqrt(disc), b - a)
        denom = db - da + 2.0 * d2
        if denom != 0:
            t = b - (b - a) * (db + d2 - d1) / denom
            lo, hi = min(a, b), max(a, b)
            width = hi - lo
            if lo + 0.1 * width <= t <= hi - 0.1 * width:
                return t
    return 0.5 * (a + b)


def wolfe_line_search(phi: Callable[[float], Point], f0: float, d0: float, alpha: float,
                      c1: float = 1e-4, c2: float = 0.9, max_evals: int = 25
                      ) -> tuple[float, Any] | None:
    """Step length satisfying the strong Wolfe conditions (NW Algorithms 3.5 and 3.6).

    Parameters
    ----------
    phi : callable
        alpha -> (f(x + alpha d), d^T grad f(x + alpha d), payload).
    f0, d0 : float
        phi(0) and phi'(0) < 0.
    alpha : float
        First trial step.

    Returns
    -------
    (alpha, payload) of a strong Wolfe point; failing that (``max_evals`` evaluations or the
    budget spent), of the best point with sufficient decrease seen, or None.
    """
    best: tuple[float, float, Any] | None = None   # (f, alpha, payload) with Armijo

    def evaluate(a: float) -> Point:
        nonlocal best
        f, d, payload = phi(a)
        if math.isfinite(f) and f <= f0 + c1 * a * d0 and (best is None or f < best[0]):
            best = (f, a, payload)
        return f, d, payload

    def zoom(lo: tuple[float, float, float], hi: tuple[float, float, float], evals: int):
        while evals < max_evals:
            a = _cubic_min(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2])
            f, d, payload = evaluate(a)
            evals += 1
            if not math.isfinite(f) or f > f0 + c1 * a * d0 or f >= lo[1]:
                hi = (a, f, d)
            else:
                if abs(d) <= -c2 * d0:
                    return a, payload
                if d * (hi[0] - lo[0]) >= 0:
                    hi = lo
                lo = (a, f, d)
        return None

    def search():
        nonlocal alpha
        prev = (0.0, f0, d0)
        for i in range(max_evals):
            f, d, payload = evaluate(alpha)
            if not math.isfinite(f) or f > f0 + c1 * alpha * d0 or (i > 0 and f >= prev[1]):
                if not math.isfinite(f):
                    f, d = math.inf, math.inf
                return zoom(prev, (alpha, f, d), i + 1)
            if abs(d) <= -c2 * d0:
                return alpha, payload
            if d >= 0:
                return zoom((alpha, f, d), prev, i + 1)
            prev = (alpha, f, d)
            alpha *= 2.0
        return None

    try:
        found = search()
    except _OutOfBudget:
        found = None
    if found is None and best is not None:
        found = (best[1], best[2])
    return found


class LBFGSvpro(Optimizer):
    """L-BFGS with a strong Wolfe line search on Phi_red(theta) (eq. 2.6).

    Parameters
    ----------
    alpha1, alpha2, max_work_units
        See :class:`train.base.Optimizer`.
    memory : int
        Number of stored correction pairs.
    c1, c2 : float
        Wolfe constants.
    max_iter : int
        Iteration limit per level.
    grad_tol, grad_rtol : float
        Stop when ||grad|| <= max(grad_tol, grad_rtol ||grad_0||).
    """

    method = "lbfgsvpro"

    def __init__(self, *, alpha1: float = 1e-10, alpha2: float = 1e-10,
                 max_work_units: float = 200.0, memory: int = 10, c1: float = 1e-4,
                 c2: float = 0.9, max_iter: int = 10_000, grad_tol: float = 0.0,
                 grad_rtol: float = 1e-10) -> None:
        super().__init__(alpha1=alpha1, alpha2=alpha2, max_work_units=max_work_units)
        self.memory = memory
        self.c1 = c1
        self.c2 = c2
        self.max_iter = max_iter
        self.grad_tol = grad_tol
        self.grad_rtol = grad_rtol

    def _run(self, model: SeparableModel, Y: torch.Tensor, C: torch.Tensor,
             counter: WorkCounter, start: float, callback: Callback) -> str:
        problem = VarProProblem(model.features, Y, C, self.alpha1, self.alpha2, counter)
        limit = start + self.max_work_units

        def value_and_grad(x: torch.Tensor) -> tuple[VarProState, torch.Tensor]:
            if counter.units + 2 > limit:
                raise _OutOfBudget
            state = problem.evaluate(x)
            return state, problem.gradient(state)

        x = problem.flat.get()
        try:
            state, g = value_and_grad(x)
        except _OutOfBudget:
            return "budget"
        gnorm0 = gnorm = float(g.norm())
        problem.store(model, state)
        callback({"iteration": 0, "loss": state.loss, "grad_norm": gnorm}, model)
        pairs: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=self.memory)
        for it in range(1, self.max_iter + 1):
            if gnorm <= max(self.grad_tol, self.grad_rtol * gnorm0):
                return "gradient tolerance"
            d = self._direction(g, pairs)
            if float(g @ d) >= 0:                       # lost descent: restart
                pairs.clear()
                d = -g
            alpha0 = 1.0 if pairs else min(1.0, 1.0 / gnorm)

            def phi(a: float, d=d, x=x) -> Point:
                st, gr = value_and_grad(x + a * d)
                return st.loss, float(gr @ d), (st, gr)

            found = wolfe_line_search(phi, state.loss, float(g @ d), alpha0, self.c1, self.c2)
            if found is None:
                if counter.units + 2 > limit:
                    return "budget"
                if pairs:                               # retry from steepest descent
                    pairs.clear()
                    continue
                return "line search failed"
            a, (new_state, new_g) = found
            s, yv = a * d, new_g - g
            sy = float(s @ yv)
            if sy > 1e-12 * float(s.norm() * yv.norm()):
                pairs.append((s, yv, 1.0 / sy))
            x, state, g = x + s, new_state, new_g
            gnorm = float(g.norm())
            problem.store(model, state)
            callback({"iteration": it, "loss": state.loss, "grad_norm": gnorm,
                      "step_norm": float(s.norm())}, model)
        return "iteration limit"

    @staticmethod
    def _direction(g: torch.Tensor, pairs) -> torch.Tensor:
        """-H_k g by the two-loop recursion (NW Algorithm 7.4)."""
        q = g.clone()
        alphas = []
        for s, y, rho in reversed(pairs):
            a = rho * float(s @ q)
            alphas.append(a)
            q -= a * y
        if pairs:
            s, y, _ = pairs[-1]
            q *= float(s @ y) / float(y @ y)
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            b = rho * float(y @ q)
            q += (a - b) * s
        return -q
