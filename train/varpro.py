"""Variable projection for the least-squares loss (GNvpro section 2.2).

Layout: samples are rows. With ``Z_a = [F(Y, theta), 1]`` of shape (n, p), p = width + 1, and
targets ``C`` of shape (n, m), the separable model is ``G = Z_a W^T`` with ``W`` of shape
(m, p); the paper's column-major matrices are the transposes of these. The objective is

    Phi(W, theta) = 1/(2n) ||Z_a W^T - C||_F^2 + alpha1/2 ||theta||^2 + alpha2/2 ||W||_F^2

(GNvpro eq. 2.6, SPEC section 4). The inner problem W(theta) (eq. 2.7) is solved with the thin
SVD ``Z_a / sqrt(n) = V diag(S) U^T`` (eq. 2.8) in float64 on the device of the model.

For the Gauss-Newton method the reduced objective is written as ``1/2 ||r(theta)||^2`` with
the augmented residual

    r(theta) = [ vec(Z_a W(theta)^T - C) / sqrt(n) ;  sqrt(alpha2) vec W(theta) ;
                 sqrt(alpha1) theta ],

whose Jacobian contains the implicit derivative of W(theta) (eqs. 2.13-2.20). Its
transpose applied to r is the exact reduced gradient (eq. 2.5).

Reduced output basis (issue 18): with P (m, k) orthonormal columns spanning the leading
principal directions of C (:func:`output_basis`), ``W = W_k P^T`` restricted to that span
gives ``||Z_a W^T - C||^2 = ||Z_a W_k^T - C P||^2 + ||C (I - P P^T)||^2`` and
``||W||_F = ||W_k||_F``: the same objective up to a constant, fitted on k columns instead of
m. With k = rank(C) it is exact; truncated, the optimum moves by at most the dropped part
``||C (I - P P^T)||_F`` (chosen below a relative tolerance). Every product with the (n, m)
matrices R and C then costs k/m of the full one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from surrogate.separable import SeparableModel, augment


class WorkCounter:
    """Work units (GNvpro section 3.1): one forward or backward pass over the batch = 1.

    Linearised forward passes (J v) count as forward passes, transposed ones (J^T w) as
    backward passes. A pass over a fraction of the batch counts as that fraction.
    """

    def __init__(self, units: float = 0.0) -> None:
        self.units = float(units)

    def add(self, units: float = 1.0) -> None:
        self.units += float(units)


class FlatParams:
    """Flat float64 view of the parameters of a module, for ``torch.func`` calls.

    Parameters
    ----------
    module : nn.Module
        Its parameters (in ``named_parameters`` order) make up theta.
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        named = list(module.named_parameters())
        self.names = [k for k, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.dtype = named[0][1].dtype
        self.device = named[0][1].device
        self.size = sum(self.numels)

    def get(self) -> torch.Tensor:
        """Current parameters as a float64 vector, shape (size,)."""
        return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).to(
            torch.float64)

    @torch.no_grad()
    def set(self, theta: torch.Tensor) -> None:
        """Copy a flat vector into the module's parameters."""
        for p, v in zip(self.module.parameters(), self.unflatten(theta).values(), strict=True):
            p.copy_(v)

    def unflatten(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dictionary name -> view of ``theta`` (cast to the module's dtype)."""
        theta = theta.to(dtype=self.dtype, device=self.device)
        parts = torch.split(theta, self.numels)
        return {k: v.reshape(s) for k, v, s in zip(self.names, parts, self.shapes, strict=True)}

    def function(self, *args: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """theta -> module(*args) with the parameters taken from theta."""
        return lambda theta: functional_call(self.module, self.unflatten(theta), args)


class Linearization:
    """Features Z(theta) with the autograd graph kept, for repeated products with J_theta Z.

    ``vjp`` is one backward pass through the kept graph; ``jvp`` differentiates the
    (linear in u) map u -> J^T u once more (double backward), so neither product repeats
    the forward pass.

    Parameters
    ----------
    F : callable
        theta -> Z, shape (n, width).
    theta : torch.Tensor
        Point of linearisation (in the dtype of the network).
    """

    def __init__(self, F: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> None:
        self.theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            self.Z = F(self.theta)
        self._u: torch.Tensor | None = None
        self._JTu: torch.Tensor | None = None

    def vjp(self, U: torch.Tensor) -> torch.Tensor:
        """J^T U for U of shape (n, width); returns shape (N_theta,)."""
        return torch.autograd.grad(self.Z, self.theta, U, retain_graph=True)[0]

    def jvp(self, v: torch.Tensor) -> torch.Tensor:
        """J v for v of shape (N_theta,); returns shape (n, width)."""
        if self._u is None or self._JTu is None:     # set together, on the first call
            with torch.enable_grad():
                self._u = torch.zeros_like(self.Z, requires_grad=True)
                (self._JTu,) = torch.autograd.grad(self.Z, self.theta, self._u,
                                                   create_graph=True)
        return torch.autograd.grad(self._JTu, self._u, v, retain_graph=True)[0]


@dataclass
class InnerSolution:
    """Solution of the inner problem (eq. 2.7) and the SVD it came from (eq. 2.8).

    Attributes
    ----------
    W : (m, p) float64
    U : (p, k) right singular vectors of Z_a / sqrt(n) (the paper's U)
    S : (k,) singular values
    V : (n, k) left singular vectors (the paper's V)
    """

    W: torch.Tensor
    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor
    alpha2: float

    def apply_inverse_hessian(self, X: torch.Tensor) -> torch.Tensor:
        """X A^{-1} with A = Z_a^T Z_a / n + alpha2 I = U (S^2 + alpha2) U^T (+ alpha2 on the
        complement of range(U) when n < p); eq. 2.18. X has shape (q, p)."""
        XU = X @ self.U
        out = (XU / (self.S**2 + self.alpha2)) @ self.U.T
        if self.U.shape[1] < self.U.shape[0]:
            out = out + (X - XU @ self.U.T) / self.alpha2
        return out


def solve_inner(Z_a: torch.Tensor, C: torch.Tensor, alpha2: float) -> InnerSolution:
    """W(theta) = argmin_W 1/(2n) ||Z_a W^T - C||^2 + alpha2/2 ||W||^2 via the SVD (eq. 2.8).

    Parameters
    ----------
    Z_a : torch.Tensor, shape (n, p)
        Features with the column of ones; converted to float64.
    C : torch.Tensor, shape (n, m)
    alpha2 : float
        Tikhonov parameter (> 0 when n < p).

    Returns
    -------
    InnerSolution
    """
    Z_a = Z_a.to(torch.float64)
    C = C.to(torch.float64)
    n = Z_a.shape[0]
    V, S, Uh = torch.linalg.svd(Z_a / math.sqrt(n), full_matrices=False)
    U = Uh.T
    # W^T = U diag(S / (S^2 + alpha2)) V^T C / sqrt(n)
    W = ((C.T @ V) * (S / (S**2 + alpha2))) @ U.T / math.sqrt(n)
    return InnerSolution(W=W, U=U, S=S, V=V, alpha2=float(alpha2))


def output_basis(C: torch.Tensor, rtol: float, max_fraction: float = 0.5
                 ) -> torch.Tensor | None:
    """Leading right singular vectors of C: the smallest k with
    ``||C (I - P P^T)||_F <= rtol ||C||_F``.

    Parameters
    ----------
    C : torch.Tensor, shape (n, m)
        Normalised training targets.
    rtol : float
        Relative Frobenius norm of the part of C left out (> 0). The energies come from the
        Gram matrix C^T C, so tolerances below about 1e-7 are not resolved (round-off).
    max_fraction : float
        No basis (None) when k would exceed this fraction of m (nothing to gain).

    Returns
    -------
    torch.Tensor, shape (m, k), float64, orthonormal columns; or None
    """
    C = C.to(torch.float64)
    m = C.shape[1]
    if rtol <= 0 or m < 2:
        return None
    lam, vec = torch.linalg.eigh(C.T @ C)              # ascending energies of the directions
    lam = lam.clamp(min=0).flip(0)
    vec = vec.flip(1)
    total = float(lam.sum())
    if not total > 0:
        return None
    tail = lam.flip(0).cumsum(0).flip(0)               # tail[k] = energy beyond k components
    tail = torch.cat([tail, tail.new_zeros(1)])
    k = int(torch.nonzero(tail <= rtol**2 * total)[0])
    k = max(k, 1)
    return vec[:, :k].contiguous() if k <= max_fraction * m else None


@dataclass
class VarProState:
    """Everything the reduced problem knows at one theta (one forward pass)."""

    theta: torch.Tensor          # (N_theta,) float64
    Z_a: torch.Tensor            # (n, p) float64
    inner: InnerSolution
    R: torch.Tensor              # (n, m) residual Z_a W^T - C, float64
    loss: float
    lin: Linearization

    @property
    def W(self) -> torch.Tensor:
        return self.inner.W


class VarProProblem:
    """Reduced least-squares problem Phi_red(theta) = Phi(W(theta), theta) (eqs. 2.3, 2.6).

    Parameters
    ----------
    features : nn.Module
        Feature extractor F; its parameters are theta.
    Y : torch.Tensor, shape (n, n_in)
        Normalised training inputs (same dtype/device as the features).
    C : torch.Tensor, shape (n, m)
        Normalised training targets.
    alpha1, alpha2 : float
        Tikhonov parameters of theta and W.
    counter : WorkCounter, optional
        Work-unit counter (shared between levels).
    basis : torch.Tensor, shape (m, k), optional
        Orthonormal output basis P (:func:`output_basis`): the problem is solved for
        ``C P`` (n, k), the reported loss includes the constant ``||C (I - P P^T)||^2 /
        (2n)``, and :meth:`store` writes ``W = W_k P^T`` (m, p) into the model.
    """

    def __init__(self, features: nn.Module, Y: torch.Tensor, C: torch.Tensor,
                 alpha1: float = 1e-10, alpha2: float = 1e-10,
                 counter: WorkCounter | None = None,
                 basis: torch.Tensor | None = None) -> None:
        self.flat = FlatParams(features)
        self.Y = Y.to(dtype=self.flat.dtype, device=self.flat.device)
        self.C = C.to(dtype=torch.float64, device=self.flat.device)
        self.n = self.Y.shape[0]
        self.basis: torch.Tensor | None = None
        self.loss_offset = 0.0
        if basis is not None:
            self.basis = basis.to(dtype=torch.float64, device=self.flat.device)
            Ck = self.C @ self.basis
            self.loss_offset = float(0.5 * ((self.C - Ck @ self.basis.T) ** 2).sum() / self.n)
            self.C = Ck
        self.alpha1, self.alpha2 = float(alpha1), float(alpha2)
        self.counter = counter if counter is not None else WorkCounter()
        self._F = self.flat.function(self.Y)

    @property
    def size(self) -> int:
        """Number of unknowns N_theta."""
        return self.flat.size

    def store(self, model: SeparableModel, state: VarProState) -> None:
        """Write theta and the optimal W(theta) of ``state`` into ``model`` (its ``features``
        are this problem's feature extractor; ``model.W`` has shape (m, p))."""
        self.flat.set(state.theta)
        W = state.W if self.basis is None else self.basis @ state.W    # (m, p)
        with torch.no_grad():
            model.W.copy_(W.to(model.W.dtype))

    def evaluate(self, theta: torch.Tensor) -> VarProState:
        """Forward pass, inner solve and reduced objective (Algorithm 2.1, right). 1 WU."""
        theta = theta.to(dtype=torch.float64, device=self.flat.device)
        lin = Linearization(self._F, theta.to(self.flat.dtype))
        self.counter.add(1)
        Z_a = augment(lin.Z.detach().to(torch.float64))
        inner = solve_inner(Z_a, self.C, self.alpha2)
        R = Z_a @ inner.W.T - self.C
        loss = (0.5 * (R**2).sum() / self.n + 0.5 * self.alpha2 * (inner.W**2).sum()
                + 0.5 * self.alpha1 * (theta**2).sum() + self.loss_offset)
        return VarProState(theta, Z_a, inner, R, float(loss), lin)

    def _features_vjp(self, state: VarProState, Zbar_a: torch.Tensor) -> torch.Tensor:
        """J_theta Z^T applied to the feature part of a cotangent of Z_a. 1 WU."""
        self.counter.add(1)
        return state.lin.vjp(Zbar_a[:, :-1].to(self.flat.dtype)).to(torch.float64)

    def _features_jvp(self, state: VarProState, v: torch.Tensor) -> torch.Tensor:
        """dZ_a = [J_theta Z v, 0], shape (n, p), float64. 1 WU."""
        self.counter.add(1)
        dZ = state.lin.jvp(v.to(self.flat.dtype)).to(torch.float64)
        return torch.cat([dZ, torch.zeros_like(dZ[:, :1])], dim=1)

    def gradient(self, state: VarProState) -> torch.Tensor:
        """Reduced gradient grad Phi_red = J_Z^T (R W / n) + alpha1 theta (eq. 2.5). 1 WU."""
        return self._features_vjp(state, state.R @ state.W / self.n) + self.alpha1 * state.theta

    def _dW(self, state: VarProState, dZ_a: torch.Tensor) -> torch.Tensor:
        """Implicit derivative dW = J_theta W v from dZ_a = J_theta Z_a v (eq. 2.20):
        dW = -(W dZ_a^T V S U^T / sqrt(n) + R^T dZ_a / n) A^{-1}, reusing the SVD."""
        inner, n = state.inner, self.n
        rhs = (state.W @ (dZ_a.T @ inner.V) * inner.S) @ inner.U.T / math.sqrt(n) \
            + state.R.T @ dZ_a / n
        return -inner.apply_inverse_hessian(rhs)

    def _adjoint(self, state: VarProState, GbarW: torch.Tensor,
                 Wbar_total: torch.Tensor) -> torch.Tensor:
        """theta-cotangent of a cotangent (Gbar, Wbar) of (G, W), given ``Gbar W`` (n, p) and
        ``Gbar^T Z_a + Wbar`` (m, p): transpose of eqs. 2.16 and 2.20 (eq. 2.17). 1 WU."""
        inner, n = state.inner, self.n
        M = -inner.apply_inverse_hessian(Wbar_total)                     # (m, p)
        Zbar_a = (GbarW + state.R @ M / n
                  + (inner.V * inner.S) @ (inner.U.T @ M.T @ state.W) / math.sqrt(n))
        return self._features_vjp(state, Zbar_a)

    def model_jvp(self, state: VarProState, v: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reduced model Jacobian times v (eq. 2.16) and dW = J_theta W v (eq. 2.20). 1 WU.

        Returns
        -------
        dG : (n, m)
            J_theta (Z_a W(theta)^T) v.
        dW : (m, p)
        """
        dZ_a = self._features_jvp(state, v)
        dW = self._dW(state, dZ_a)
        return dZ_a @ state.W.T + state.Z_a @ dW.T, dW                  # eq. 2.16

    def model_vjp(self, state: VarProState, Gbar: torch.Tensor,
                  Wbar: torch.Tensor | None = None) -> torch.Tensor:
        """Transpose of :meth:`model_jvp` (eq. 2.17): theta-cotangent of (dG, dW). 1 WU.

        Parameters
        ----------
        Gbar : (n, m)
        Wbar : (m, p), optional
        """
        Wbar_total = Gbar.T @ state.Z_a
        if Wbar is not None:
            Wbar_total = Wbar_total + Wbar
        return self._adjoint(state, Gbar @ state.W, Wbar_total)

    def residual_jvp(self, state: VarProState, v: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Jacobian of the augmented residual r(theta) times v. 1 WU."""
        dG, dW = self.model_jvp(state, v)
        return (dG / math.sqrt(self.n), math.sqrt(self.alpha2) * dW,
                math.sqrt(self.alpha1) * v)

    def residual_vjp(self, state: VarProState,
                     w: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Transpose of :meth:`residual_jvp`. 1 WU."""
        g, wW, t = w
        return (self.model_vjp(state, g / math.sqrt(self.n), math.sqrt(self.alpha2) * wW)
                + math.sqrt(self.alpha1) * t)

    def gn_hvp(self, state: VarProState, v: torch.Tensor) -> torch.Tensor:
        """Gauss-Newton Hessian of the reduced problem times v (eq. 2.11). 2 WU.

        Equals ``residual_vjp(residual_jvp(v))`` but keeps dG = dZ_a W^T + Z_a dW^T factored,
        so that no (n, m) matrix is formed besides the products with R.
        """
        n, W, Z_a = self.n, state.W, state.Z_a
        dZ_a = self._features_jvp(state, v)
        dW = self._dW(state, dZ_a)
        GbarW = (dZ_a @ (W.T @ W) + Z_a @ (dW.T @ W)) / n                 # dG W / n
        GbarT_Z = (W @ (dZ_a.T @ Z_a) + dW @ (Z_a.T @ Z_a)) / n           # dG^T Z_a / n
        return self._adjoint(state, GbarW, GbarT_Z + self.alpha2 * dW) + self.alpha1 * v

    def reduced_objective(self, theta: torch.Tensor) -> float:
        """Phi_red(theta) (eq. 2.6). 1 WU."""
        return self.evaluate(theta).loss
