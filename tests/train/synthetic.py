"""Small generated separable problems for the training tests."""

from __future__ import annotations

import numpy as np
import torch

from surrogate import NeuralODE, SeparableModel


def teacher_data(n: int = 64, n_in: int = 3, n_out: int = 5, width: int = 4, n_steps: int = 2,
                 seed: int = 0, dtype: torch.dtype = torch.float64, device: str = "cpu"
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of a random separable teacher c = W [F(y); 1]."""
    g = torch.Generator().manual_seed(seed)
    teacher = SeparableModel(NeuralODE(n_in, width, n_steps, generator=g), n_out)
    with torch.no_grad():
        teacher.W.copy_(torch.randn(n_out, width + 1, generator=g, dtype=torch.float64))
        Y = torch.randn(n, n_in, generator=g, dtype=torch.float64)
        C = teacher(Y)
    return Y.to(dtype=dtype, device=device), C.to(device=device)


def student(n_in: int = 3, n_out: int = 5, width: int = 4, n_steps: int = 2, seed: int = 1,
            dtype: torch.dtype = torch.float64, device: str = "cpu") -> SeparableModel:
    g = torch.Generator().manual_seed(seed)
    return SeparableModel(NeuralODE(n_in, width, n_steps, generator=g, dtype=dtype,
                                    device=device), n_out)


def write_npz(path, n: int = 80, seed: int = 0) -> None:
    """A small foreign .npz dataset (y: 4 parameters, c: 6 observables), no stored split."""
    rng = np.random.default_rng(seed)
    y = rng.uniform(size=(n, 4))
    M = rng.normal(size=(4, 6))
    c = 2.0 + np.sin(y @ M) + 0.5 * np.cos(2 * y @ M)
    np.savez(path, y=y, c=c)
