"""Residual network feature extractor (slimTrain appendix B, eqs. B.1-B.2).

    u_0     = tanh(K_in y + b_in)
    u_{j+1} = u_j + h tanh(K_j u_j + b_j),   j = 0, ..., d - 1,   h = T / d.

SPEC section 4 fixes width 16, depth 8 and T = 4 for CDR (the slimTrain text says T = 5 with
h = 5/8; SPEC wins). Layer j's weights belong to time t_j = j h (forward Euler reading), and
prolongation interpolates them piecewise-linearly in time (constant beyond t_{d-1}).
"""

from __future__ import annotations

import torch
from torch import nn

from surrogate.neural_ode import init_layer_weights, interp_rows


class ResNet(nn.Module):
    """ResNet feature extractor F(y, theta).

    Parameters
    ----------
    n_in : int
        Number of input features.
    width : int
        Width of the features.
    n_steps : int
        Depth d (number of residual layers).
    final_time : float
        T = d h.
    generator : torch.Generator, optional
        Random generator for the initial weights.
    dtype, device
        Of the weights.

    Attributes
    ----------
    K_in : Parameter, shape (width, n_in)
    b_in : Parameter, shape (width,)
    K : Parameter, shape (n_steps, width, width)
    b : Parameter, shape (n_steps, width)
    """

    architecture = "resnet"
    K_in: nn.Parameter
    b_in: nn.Parameter
    K: nn.Parameter
    b: nn.Parameter

    def __init__(
        self,
        n_in: int,
        width: int,
        n_steps: int,
        final_time: float = 4.0,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if n_steps < 1 or width < 1 or n_in < 1:
            raise ValueError("n_in, width and n_steps must be positive")
        self.n_in, self.width, self.n_steps = int(n_in), int(width), int(n_steps)
        self.final_time = float(final_time)

        init_layer_weights(self, n_in, width, n_steps, generator=generator, dtype=dtype,
                           device=device)

    def config(self) -> dict:
        """Architecture settings (JSON-serialisable) that rebuild this module."""
        return {"architecture": self.architecture, "n_in": self.n_in, "width": self.width,
                "n_steps": self.n_steps, "final_time": self.final_time}

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Features u_d.

        Parameters
        ----------
        y : torch.Tensor, shape (n, n_in)

        Returns
        -------
        torch.Tensor, shape (n, width)
        """
        h = self.final_time / self.n_steps
        u = torch.tanh(y @ self.K_in.T + self.b_in)
        for j in range(self.n_steps):
            u = u + h * torch.tanh(u @ self.K[j].T + self.b[j])
        return u

    @torch.no_grad()
    def prolong(self, n_steps: int) -> ResNet:
        """Copy with ``n_steps`` layers, weights interpolated piecewise-linearly in time."""
        new = ResNet(self.n_in, self.width, n_steps, self.final_time,
                     dtype=self.K.dtype, device=self.K.device)
        # new layer i sits at time i T / n_steps, i.e. at old layer position i d / n_steps
        s = torch.arange(n_steps, dtype=torch.float64) * (self.n_steps / n_steps)
        s = torch.clamp(s, max=self.n_steps - 1)
        new.K_in.copy_(self.K_in)
        new.b_in.copy_(self.b_in)
        new.K.copy_(interp_rows(self.K, s))
        new.b.copy_(interp_rows(self.b, s))
        return new
