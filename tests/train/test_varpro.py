"""Inner solve, reduced gradient and reduced Jacobian products (GNvpro eqs. 2.6-2.20)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from surrogate.separable import augment
from tests.train.synthetic import student, teacher_data
from train.gauss_newton import FullProblem
from train.varpro import VarProProblem, WorkCounter, solve_inner

ALPHA1, ALPHA2 = 1e-3, 1e-2        # large enough that the regularisation terms matter


def problem(dtype=torch.float64, device="cpu", n=40, **kw) -> VarProProblem:
    Y, C = teacher_data(n=n, dtype=dtype, device=device, n_steps=3, seed=2)
    model = student(dtype=dtype, device=device, n_steps=3)
    return VarProProblem(model.features, Y, C + 0.1, kw.get("alpha1", ALPHA1),
                         kw.get("alpha2", ALPHA2))


@pytest.mark.parametrize("n", [40, 3], ids=["overdetermined", "underdetermined"])
def test_inner_solution_matches_lstsq_on_augmented_system(dtype, device, n):
    P = problem(dtype, device, n=n)
    Z_a = augment(P.flat.function(P.Y)(P.flat.get()).detach()).double().cpu().numpy()
    C = P.C.cpu().numpy()
    p = Z_a.shape[1]
    # [Z_a / sqrt(n); sqrt(alpha2) I] W^T = [C / sqrt(n); 0]  (eq. 2.7), solved independently
    A = np.vstack([Z_a / math.sqrt(n), math.sqrt(ALPHA2) * np.eye(p)])
    B = np.vstack([C / math.sqrt(n), np.zeros((p, C.shape[1]))])
    W_ref = np.linalg.lstsq(A, B, rcond=None)[0].T
    W = solve_inner(torch.as_tensor(Z_a, device=device), P.C, ALPHA2).W
    assert W.dtype == torch.float64 and W.device.type == device
    np.testing.assert_allclose(W.cpu().numpy(), W_ref, rtol=1e-9, atol=1e-11)


def test_reduced_gradient_matches_central_differences():
    P = problem()
    theta = P.flat.get()
    g = P.gradient(P.evaluate(theta))
    rng = np.random.default_rng(0)
    for _ in range(3):
        v = torch.as_tensor(rng.normal(size=theta.shape))
        eps = 1e-5
        fd = (P.reduced_objective(theta + eps * v) - P.reduced_objective(theta - eps * v)) / (
            2 * eps)
        assert abs(fd - float(g @ v)) <= 1e-5 * abs(fd), (fd, float(g @ v))


def test_jacobian_matches_finite_differences_of_reduced_model():
    P = problem()
    theta = P.flat.get()
    state = P.evaluate(theta)
    v = torch.as_tensor(np.random.default_rng(1).normal(size=theta.shape))
    dG, dW = P.model_jvp(state, v)
    eps = 1e-5
    sp, sm = P.evaluate(theta + eps * v), P.evaluate(theta - eps * v)
    fd_G = (sp.Z_a @ sp.W.T - sm.Z_a @ sm.W.T) / (2 * eps)
    fd_W = (sp.W - sm.W) / (2 * eps)
    assert float((fd_G - dG).norm() / dG.norm()) < 1e-6
    assert float((fd_W - dW).norm() / dW.norm()) < 1e-6
    # the implicit term (eq. 2.20) matters: W(theta) J_Z v alone is far off
    dZ_a = P._features_jvp(state, v)
    assert float((fd_G - dZ_a @ state.W.T).norm() / dG.norm()) > 1e-3


@pytest.mark.parametrize("n", [40, 3], ids=["overdetermined", "underdetermined"])
def test_adjoint_identity(dtype, device, n):
    """<J v, w> = <v, J^T w> for the reduced model Jacobian (eqs. 2.16, 2.17)."""
    P = problem(dtype, device, n=n)
    state = P.evaluate(P.flat.get())
    g = torch.Generator().manual_seed(3)
    v = torch.randn(P.size, generator=g, dtype=torch.float64).to(device)
    wG = torch.randn(state.R.shape, generator=g, dtype=torch.float64).to(device)
    wW = torch.randn(state.W.shape, generator=g, dtype=torch.float64).to(device)
    dG, dW = P.model_jvp(state, v)
    lhs = float((dG * wG).sum() + (dW * wW).sum())
    rhs = float(v @ P.model_vjp(state, wG, wW))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert abs(lhs - rhs) <= tol * max(abs(lhs), 1.0), (lhs, rhs)


def test_gradient_is_transpose_jacobian_times_residual_and_hvp_is_symmetric():
    P = problem()
    theta = P.flat.get()
    state = P.evaluate(theta)
    n = P.n
    r = (state.R / math.sqrt(n), math.sqrt(ALPHA2) * state.W, math.sqrt(ALPHA1) * theta)
    g = P.gradient(state)
    torch.testing.assert_close(P.residual_vjp(state, r), g, rtol=1e-12, atol=1e-14)
    u, v = (torch.randn(P.size, dtype=torch.float64) for _ in range(2))
    assert abs(float(u @ P.gn_hvp(state, v)) - float(v @ P.gn_hvp(state, u))) < 1e-10
    assert float(v @ P.gn_hvp(state, v)) > 0


def test_work_units_per_product():
    counter = WorkCounter()
    Y, C = teacher_data()
    P = VarProProblem(student().features, Y, C, counter=counter)
    state = P.evaluate(P.flat.get())
    assert counter.units == 1
    P.gradient(state)
    assert counter.units == 2
    P.gn_hvp(state, torch.ones(P.size, dtype=torch.float64))
    assert counter.units == 4


def test_full_problem_gradient_and_gauss_newton_product():
    Y, C = teacher_data(n=30, seed=4)
    model = student()
    P = FullProblem(model.features, 5, Y, C, ALPHA1, ALPHA2, WorkCounter())
    x = P.join(P.flat.get(), torch.randn(5, 5, dtype=torch.float64))
    state = P.evaluate(x)
    g = P.gradient(state)
    v = torch.randn(P.size, dtype=torch.float64)
    eps = 1e-5
    fd = (P.evaluate(x + eps * v).loss - P.evaluate(x - eps * v).loss) / (2 * eps)
    assert abs(fd - float(g @ v)) <= 1e-6 * abs(fd)
    u = torch.randn(P.size, dtype=torch.float64)
    assert abs(float(u @ P.gn_hvp(state, v)) - float(v @ P.gn_hvp(state, u))) < 1e-10


def test_factored_gauss_newton_product_equals_explicit_one():
    P = problem()
    state = P.evaluate(P.flat.get())
    v = torch.randn(P.size, dtype=torch.float64)
    explicit = P.residual_vjp(state, P.residual_jvp(state, v))
    torch.testing.assert_close(P.gn_hvp(state, v), explicit, rtol=1e-11, atol=1e-13)


def test_full_gauss_newton_product_equals_jacobian_transpose_jacobian():
    Y, C = teacher_data(n=30, seed=4)
    P = FullProblem(student().features, 5, Y, C, ALPHA1, ALPHA2, WorkCounter())
    x = P.join(P.flat.get(), torch.randn(5, 5, dtype=torch.float64))
    state = P.evaluate(x)
    # J of r = [vec(R) / sqrt(n); sqrt(alpha2) vec W; sqrt(alpha1) theta] by finite differences
    eps = 1e-6

    def r(z):
        s = P.evaluate(z)
        return torch.cat([s.R.reshape(-1) / math.sqrt(P.n), math.sqrt(ALPHA2) * s.W.reshape(-1),
                          math.sqrt(ALPHA1) * s.theta])

    J = torch.stack([(r(x + eps * e) - r(x - eps * e)) / (2 * eps)
                     for e in torch.eye(P.size, dtype=torch.float64)], dim=1)
    v = torch.randn(P.size, dtype=torch.float64)
    torch.testing.assert_close(P.gn_hvp(state, v), J.T @ (J @ v), rtol=1e-6, atol=1e-8)
