"""Input and target normalisation learned from the training split.

Inputs are standardised per feature, ``y_n = (y - y_shift) / y_scale``. Targets are mapped
by ``c_n = (c - c_shift) / c_scale`` with ``c_shift`` the training mean (when centring, as for
DCR, SPEC section 2) or zero, and one scalar ``c_scale`` (root mean square of the shifted
training targets), so that relative errors ``||c_pred - c|| / ||c - c_shift||`` are the same in
normalised and physical units and the relative weighting of the observables is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class Normalizer(nn.Module):
    """Affine maps of inputs and targets; all statistics are buffers (saved with the model).

    Parameters
    ----------
    n_in, n_out : int
        Numbers of input features and targets.
    standardize_inputs : bool
        Per-feature mean and standard deviation of the inputs (features with zero spread keep
        scale 1); otherwise inputs pass unchanged.
    center_targets : bool
        Subtract the training mean of the targets (DCR, SPEC section 2).
    dtype : torch.dtype
        Of the buffers.

    Attributes
    ----------
    y_shift, y_scale : buffer, shape (n_in,)
    c_shift : buffer, shape (n_out,)
    c_scale : buffer, shape ()
    """

    def __init__(self, n_in: int, n_out: int, *, standardize_inputs: bool = True,
                 center_targets: bool = False, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.standardize_inputs, self.center_targets = bool(standardize_inputs), bool(
            center_targets)
        self.register_buffer("y_shift", torch.zeros(n_in, dtype=dtype))
        self.register_buffer("y_scale", torch.ones(n_in, dtype=dtype))
        self.register_buffer("c_shift", torch.zeros(n_out, dtype=dtype))
        self.register_buffer("c_scale", torch.ones((), dtype=dtype))

    @torch.no_grad()
    def fit(self, y: torch.Tensor, c: torch.Tensor) -> Normalizer:
        """Learn the statistics from training data.

        Parameters
        ----------
        y : torch.Tensor, shape (n, n_in)
        c : torch.Tensor, shape (n, n_out)
        """
        y = y.to(self.y_shift)
        c = c.to(self.c_shift)
        if self.standardize_inputs:
            std = y.std(dim=0, unbiased=False)
            self.y_shift.copy_(y.mean(dim=0))
            self.y_scale.copy_(torch.where(std > 0, std, torch.ones_like(std)))
        if self.center_targets:
            self.c_shift.copy_(c.mean(dim=0))
        rms = torch.sqrt(torch.mean((c - self.c_shift) ** 2))
        self.c_scale.copy_(rms if rms > 0 else torch.ones_like(rms))
        return self

    def transform_y(self, y: torch.Tensor) -> torch.Tensor:
        """Normalised inputs, shape (n, n_in)."""
        return (y - self.y_shift) / self.y_scale

    def transform_c(self, c: torch.Tensor) -> torch.Tensor:
        """Normalised targets, shape (n, n_out)."""
        return (c - self.c_shift) / self.c_scale

    def inverse_c(self, c_n: torch.Tensor) -> torch.Tensor:
        """Targets in physical units from normalised ones, shape (n, n_out)."""
        return c_n * self.c_scale + self.c_shift

    def config(self) -> dict:
        """Settings that rebuild this module (the statistics are in the weights file)."""
        return {"n_in": self.n_in, "n_out": self.n_out,
                "standardize_inputs": self.standardize_inputs,
                "center_targets": self.center_targets}
