"""Neural ODE feature extractor with the anti-symmetric layer (GNvpro section 3.1).

The features are ``u(T)`` of

    du/dt = f(u, K(t), b(t)) = tanh((K(t) - K(t)^T - gamma I) u + b(t)),   t in (0, T],
    u(0)  = tanh(K_in y + b_in),

discretised with the classical fourth-order Runge-Kutta scheme on ``n_steps`` equidistant
steps of [0, T]. The time-dependent weights K(t), b(t) live on the ``n_steps + 1`` nodes of
the time grid and are piecewise linear in time: the two RK4 stages at the half step use the
average of the weights at the two ends of the step (exact linear interpolation). With this
reading, prolongation to twice as many steps (linear interpolation at the new mid nodes)
leaves the continuous-in-time weight function unchanged, so a prolonged network differs
from the original only by the RK4 discretisation error.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: |h lambda| where the stability region of the classical RK4 scheme meets the imaginary axis
RK4_IMAGINARY_LIMIT = 2.0 * math.sqrt(2.0)


def _interp_nodes(values: torch.Tensor, n_steps_new: int) -> torch.Tensor:
    """Piecewise-linear interpolation in time of node values onto a finer equidistant grid.

    Parameters
    ----------
    values : torch.Tensor, shape (d + 1, ...)
        Values on the nodes t_j = j T / d.
    n_steps_new : int
        Number of steps of the new grid.

    Returns
    -------
    torch.Tensor, shape (n_steps_new + 1, ...)
    """
    d = values.shape[0] - 1
    s = torch.linspace(0.0, float(d), n_steps_new + 1, dtype=torch.float64)
    return interp_rows(values, s)


def interp_rows(values: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Linear interpolation between rows of ``values`` at fractional row positions ``s``.

    Parameters
    ----------
    values : torch.Tensor, shape (m, ...)
    s : torch.Tensor, shape (k,), float64
        Positions in [0, m - 1].

    Returns
    -------
    torch.Tensor, shape (k, ...)
    """
    m = values.shape[0]
    left = torch.clamp(torch.floor(s).long(), min=0, max=max(m - 2, 0))
    right = torch.clamp(left + 1, max=m - 1)
    frac = (s - left).to(dtype=values.dtype, device=values.device)
    frac = frac.reshape((-1,) + (1,) * (values.dim() - 1))
    left, right = left.to(values.device), right.to(values.device)
    return (1 - frac) * values[left] + frac * values[right]


def init_layer_weights(module: nn.Module, n_in: int, width: int, n_layers: int, *,
                       init_scale: float = 1.0, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float64,
                       device: torch.device | str = "cpu") -> None:
    """Register the weights of an opening layer plus a stack of layers on ``module``.

    K_in (width, n_in) ~ N(0, 1 / n_in), b_in = 0, K (n_layers, width, width) ~
    N(0, init_scale^2 / width), b (n_layers, width) = 0; drawn in float64 from ``generator``
    (so seeded runs are identical for every dtype), then cast.
    """
    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    module.K_in = nn.Parameter(
        (randn(width, n_in) / math.sqrt(n_in)).to(dtype=dtype, device=device))
    module.b_in = nn.Parameter(torch.zeros(width, dtype=dtype, device=device))
    module.K = nn.Parameter(
        (randn(n_layers, width, width) * (init_scale / math.sqrt(width))).to(
            dtype=dtype, device=device))
    module.b = nn.Parameter(torch.zeros(n_layers, width, dtype=dtype, device=device))


class NeuralODE(nn.Module):
    """Neural ODE feature extractor F(y, theta) of GNvpro eq. (3.1), RK4 discretisation.

    Parameters
    ----------
    n_in : int
        Number of input features.
    width : int
        Width N_out of the features (8 for CDR, 16 for DCR).
    n_steps : int
        Number d of RK4 steps (depth).
    final_time : float
        Final time T (SPEC: 4).
    gamma : float
        Shift of the anti-symmetric layer (SPEC: 1e-4).
    init_scale : float
        The layer weights K start as N(0, init_scale^2 / width) (K_in as N(0, 1 / n_in)).
    max_step_radius : float, optional
        If given, the initial K are scaled down (never up) so that
        ``h max_j rho(K_j - K_j^T) <= max_step_radius`` with h = final_time / n_steps (stable
        first level; :data:`RK4_IMAGINARY_LIMIT` is the limit). Only the initialisation.
    generator : torch.Generator, optional
        Random generator for the initial weights (seeded runs are deterministic on CPU).
    dtype, device
        Of the weights.

    Attributes
    ----------
    K_in : Parameter, shape (width, n_in)
    b_in : Parameter, shape (width,)
    K : Parameter, shape (n_steps + 1, width, width)
        K(t_j) on the nodes t_j = j T / n_steps.
    b : Parameter, shape (n_steps + 1, width)
    """

    architecture = "neural_ode"
    K_in: nn.Parameter
    b_in: nn.Parameter
    K: nn.Parameter
    b: nn.Parameter
    eye: torch.Tensor  # buffer (not saved), identity of shape (width, width)

    def __init__(
        self,
        n_in: int,
        width: int,
        n_steps: int,
        final_time: float = 4.0,
        gamma: float = 1e-4,
        *,
        init_scale: float = 1.0,
        max_step_radius: float | None = None,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if n_steps < 1 or width < 1 or n_in < 1:
            raise ValueError("n_in, width and n_steps must be positive")
        self.n_in, self.width, self.n_steps = int(n_in), int(width), int(n_steps)
        self.final_time, self.gamma = float(final_time), float(gamma)

        init_layer_weights(self, n_in, width, n_steps + 1, init_scale=init_scale,
                           generator=generator, dtype=dtype, device=device)
        self.register_buffer("eye", torch.eye(width, dtype=dtype, device=device),
                             persistent=False)
        if max_step_radius is not None:
            if not max_step_radius > 0:
                raise ValueError(f"max_step_radius must be positive, got {max_step_radius}")
            current = self.step_spectral_radius()
            if current > max_step_radius:
                with torch.no_grad():
                    self.K.mul_(max_step_radius / current)

    @torch.no_grad()
    def step_spectral_radius(self) -> float:
        """``h max_j rho(K_j - K_j^T)`` over the time nodes, h = final_time / n_steps.

        Below :data:`RK4_IMAGINARY_LIMIT` every RK4 step of the linearised layer is stable.
        """
        S = (self.K - self.K.transpose(1, 2)).to(torch.float64)
        # S is real anti-symmetric: its eigenvalues are +-i sigma, sigma the singular values
        rho = float(torch.linalg.matrix_norm(S, ord=2).max())
        return rho * self.final_time / self.n_steps

    def config(self) -> dict:
        """Architecture settings (JSON-serialisable) that rebuild this module."""
        return {"architecture": self.architecture, "n_in": self.n_in, "width": self.width,
                "n_steps": self.n_steps, "final_time": self.final_time, "gamma": self.gamma}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Features u(T).

        Parameters
        ----------
        y : torch.Tensor, shape (n, n_in)

        Returns
        -------
        torch.Tensor, shape (n, width)
        """
        h = self.final_time / self.n_steps
        A = self.K - self.K.transpose(1, 2) - self.gamma * self.eye  # (d+1, w, w)
        At, b = A.transpose(1, 2), self.b
        # weights at the half steps: linear interpolation in time (see the module docstring)
        nodes = list(zip(At.unbind(0), b.unbind(0), strict=True))
        mids = list(zip((0.5 * (At[:-1] + At[1:])).unbind(0), (0.5 * (b[:-1] + b[1:])).unbind(0),
                        strict=True))
        u = torch.tanh(y @ self.K_in.T + self.b_in)
        for j in range(self.n_steps):
            (A0, b0), (Am, bm), (A1, b1) = nodes[j], mids[j], nodes[j + 1]
            k1 = torch.tanh(torch.addmm(b0, u, A0))
            k2 = torch.tanh(torch.addmm(bm, u + (0.5 * h) * k1, Am))
            k3 = torch.tanh(torch.addmm(bm, u + (0.5 * h) * k2, Am))
            k4 = torch.tanh(torch.addmm(b1, u + h * k3, A1))
            u = u + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        return u

    @torch.no_grad()
    def prolong(self, n_steps: int) -> NeuralODE:
        """Copy on a finer time grid, weights interpolated piecewise-linearly in time.

        Parameters
        ----------
        n_steps : int
            New number of steps (e.g. ``2 * self.n_steps``).
        """
        new = NeuralODE(self.n_in, self.width, n_steps, self.final_time, self.gamma,
                        dtype=self.K.dtype, device=self.K.device)
        new.K_in.copy_(self.K_in)
        new.b_in.copy_(self.b_in)
        new.K.copy_(_interp_nodes(self.K, n_steps))
        new.b.copy_(_interp_nodes(self.b, n_steps))
        return new
