"""The cheaper work units of issue 18: reduced output basis and float32 features with a
float64 finish."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate.separable import augment
from tests.train.synthetic import student, teacher_data
from train.factories import promote
from train.varpro import (
    VarProProblem,
    WorkCounter,
    output_basis,
    solve_inner,
)


def low_rank_problem(m: int = 30, rank: int = 5, n: int = 60):
    """Targets of exact rank ``rank`` in ``m`` outputs (a teacher with 5 outputs, mixed)."""
    Y, C = teacher_data(n=n, n_out=rank, seed=0)
    mix = torch.randn(rank, m, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return Y, C @ mix + 0.1


def test_output_basis_tolerance() -> None:
    _, C = low_rank_problem()
    P = output_basis(C, 1e-6)
    rank = int(np.linalg.matrix_rank(C.numpy()))
    assert rank <= 6 and P is not None and P.shape == (30, rank)
    np.testing.assert_allclose((P.T @ P).numpy(), np.eye(rank), atol=1e-12)
    assert torch.linalg.matrix_norm(C - C @ P @ P.T) <= 1e-12 * torch.linalg.matrix_norm(C)
    assert output_basis(C, 0.0) is None                    # off
    assert output_basis(torch.randn(40, 6, dtype=torch.float64), 1e-10) is None  # k > m / 2


def test_reduced_basis_gives_the_same_problem() -> None:
    """With a basis spanning the targets: the same loss, gradient, Gauss-Newton products and,
    written back, the same W as the full problem (up to round-off)."""
    Y, C = low_rank_problem()
    model = student(n_out=30)
    full = VarProProblem(model.features, Y, C)
    reduced = VarProProblem(model.features, Y, C, basis=output_basis(C, 1e-6))
    theta = full.flat.get()
    s_full, s_red = full.evaluate(theta), reduced.evaluate(theta)
    assert s_red.loss == pytest.approx(s_full.loss, rel=1e-10)
    g_full, g_red = full.gradient(s_full), reduced.gradient(s_red)
    np.testing.assert_allclose(g_red.numpy(), g_full.numpy(), rtol=1e-8, atol=1e-12)
    v = torch.randn_like(theta)
    np.testing.assert_allclose(reduced.gn_hvp(s_red, v).numpy(), full.gn_hvp(s_full, v).numpy(),
                               rtol=1e-8, atol=1e-10)
    reduced.store(model, s_red)
    np.testing.assert_allclose(model.W.detach().numpy(), s_full.W.numpy(), rtol=1e-8,
                               atol=1e-10)
    # a truncated basis: the loss includes the left-out energy as a constant
    trunc = VarProProblem(model.features, Y, C, basis=output_basis(C, 0.3))
    assert trunc.basis is not None and trunc.basis.shape[1] < reduced.basis.shape[1]
    assert trunc.loss_offset > 0
    assert trunc.evaluate(theta).loss >= s_full.loss - 1e-12


def test_promote_resolves_w_in_float64() -> None:
    Y, C = teacher_data(n=80, n_out=4, seed=0)
    m32 = student(n_out=4, dtype=torch.float32)
    m64 = promote(m32, torch.float64, Y, C, alpha2=1e-10, counter=(c := WorkCounter()))
    assert m64.W.dtype == torch.float64 and c.units == 1
    assert m32.W.dtype == torch.float32                            # the original is kept
    with torch.no_grad():
        Z_a = augment(m64.features(Y))
    np.testing.assert_allclose(m64.W.detach().numpy(), solve_inner(Z_a, C, 1e-10).W.numpy(),
                               rtol=1e-12)
    assert promote(m64, torch.float64, Y, C, 1e-10) is m64
