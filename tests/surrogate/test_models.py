"""Feature extractors, prolongation and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from surrogate import NeuralODE, Normalizer, ResNet, SeparableModel


def ode_reference(F: NeuralODE, y: np.ndarray) -> np.ndarray:
    """u(T) of the Neural ODE with weights piecewise linear in time between the nodes,
    integrated step by step with a high-order adaptive method (independent of RK4)."""
    K, b = F.K.detach().cpu().numpy(), F.b.detach().cpu().numpy()
    d, w = F.n_steps, F.width
    h = F.final_time / d
    A = K - K.transpose(0, 2, 1) - F.gamma * np.eye(w)
    u = np.tanh(y @ F.K_in.detach().cpu().numpy().T + F.b_in.detach().cpu().numpy())
    n = u.shape[0]
    for j in range(d):
        def rhs(t, uf, j=j):
            s = (t - j * h) / h
            return np.tanh(uf.reshape(n, w) @ ((1 - s) * A[j] + s * A[j + 1]).T
                           + (1 - s) * b[j] + s * b[j + 1]).ravel()
        u = solve_ivp(rhs, (j * h, (j + 1) * h), u.ravel(), method="DOP853", rtol=1e-12,
                      atol=1e-12).y[:, -1].reshape(n, w)
    return u


def small_ode(n_steps: int = 2, seed: int = 0, **kw) -> NeuralODE:
    g = torch.Generator().manual_seed(seed)
    F = NeuralODE(3, 5, n_steps, generator=g, **kw)
    with torch.no_grad():
        F.b.copy_(0.5 * torch.randn(F.b.shape, generator=g, dtype=torch.float64))
    return F


@pytest.mark.parametrize("cls", [NeuralODE, ResNet])
def test_forward_dtype_device_and_state(cls, dtype, device):
    F = cls(4, 6, 3, dtype=dtype, device=device)
    model = SeparableModel(F, 7)
    out = model(torch.randn(10, 4, dtype=dtype, device=device))
    assert out.shape == (10, 7) and out.dtype == dtype and out.device.type == device
    keys = set(model.state_dict())
    assert {"W", "features.K_in", "features.b_in", "features.K", "features.b",
            "normalizer.y_shift", "normalizer.c_scale"} <= keys
    assert all(t.device.type == device for t in model.state_dict().values())


def test_rk4_converges_at_fourth_order_to_the_ode_with_interpolated_weights():
    """Half-step weights are the linear interpolation of the node weights: a prolonged
    network solves the same ODE, and its RK4 error falls by ~16 per halving of h."""
    F = small_ode(n_steps=4)
    y = np.random.default_rng(1).normal(size=(8, 3))
    ref = ode_reference(F, y)
    errs = [np.abs(F.prolong(d)(torch.as_tensor(y)).detach().numpy() - ref).max()
            for d in (8, 16, 32)]
    assert errs[-1] < 1e-5
    assert errs[0] / errs[1] > 10 and errs[1] / errs[2] > 10, errs


def test_prolongation_interpolates_nodes_and_keeps_output_for_smooth_weights():
    F = small_ode(n_steps=8)
    t = torch.linspace(0, F.final_time, 9, dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    K0, K1 = (0.5 * torch.randn(5, 5, generator=g, dtype=torch.float64) for _ in range(2))
    with torch.no_grad():
        F.K.copy_(K0 + torch.cos(t)[:, None, None] * K1)
        F.b.copy_(0.3 * torch.sin(t)[:, None].expand(9, 5))
    P = F.prolong(16)
    assert torch.equal(P.K[::2], F.K) and torch.equal(P.b[::2], F.b)
    torch.testing.assert_close(P.K[1::2], 0.5 * (F.K[:-1] + F.K[1:]))
    assert torch.equal(P.K_in, F.K_in) and torch.equal(P.b_in, F.b_in)
    y = torch.randn(20, 3, dtype=torch.float64, generator=g)
    with torch.no_grad():
        out8, out16, out32 = F(y), P(y), F.prolong(32)(y)
    rel = float((out8 - out16).norm() / out8.norm())
    assert rel < 2e-2, rel
    # the change is the RK4 error only: it shrinks by ~2^4 with every halving of h
    assert float((out8 - out16).norm() / (out16 - out32).norm()) > 10


def test_resnet_prolongation_keeps_time_constant_weights():
    R = ResNet(3, 4, 4)
    with torch.no_grad():
        R.K.copy_(R.K[0].expand_as(R.K))
    P = R.prolong(8)
    assert P.K.shape == (8, 4, 4)
    torch.testing.assert_close(P.K, R.K[0].expand(8, 4, 4))


def test_separable_prolong_keeps_W_and_normalizer():
    model = SeparableModel(small_ode(2), 4)
    with torch.no_grad():
        model.W.normal_()
    new = model.prolong(4)
    assert new.features.n_steps == 4 and torch.equal(new.W, model.W)
    assert new.normalizer is model.normalizer


@pytest.mark.parametrize("center", [False, True])
def test_normalizer_roundtrip_and_relative_error_invariance(center):
    g = torch.Generator().manual_seed(0)
    y = torch.rand(50, 3, generator=g, dtype=torch.float64) * 5 + 2
    c = torch.rand(50, 6, generator=g, dtype=torch.float64) + 10
    norm = Normalizer(3, 6, center_targets=center).fit(y, c)
    yn = norm.transform_y(y)
    torch.testing.assert_close(yn.mean(0), torch.zeros(3, dtype=torch.float64))
    torch.testing.assert_close(yn.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    torch.testing.assert_close(norm.inverse_c(norm.transform_c(c)), c)
    assert torch.allclose(norm.c_shift, c.mean(0)) == center
    # scalar target scale: relative errors are the same in normalised and physical units
    pred = c + 0.01 * torch.randn(c.shape, generator=g, dtype=torch.float64)
    phys = (pred - c).norm(dim=1) / (c - norm.c_shift).norm(dim=1)
    normd = (norm.transform_c(pred) - norm.transform_c(c)).norm(dim=1) / norm.transform_c(
        c).norm(dim=1)
    torch.testing.assert_close(phys, normd)


def test_predict_is_in_physical_units():
    model = SeparableModel(small_ode(2), 2, Normalizer(3, 2, center_targets=True))
    model.normalizer.fit(torch.randn(30, 3, dtype=torch.float64),
                         100 + torch.randn(30, 2, dtype=torch.float64))
    y = np.random.default_rng(0).normal(size=(5, 3))
    with torch.no_grad():
        expected = model.normalizer.inverse_c(model(model.normalizer.transform_y(
            torch.as_tensor(y)))).numpy()
    np.testing.assert_allclose(model.predict(y), expected)
    assert abs(model.predict(y).mean() - 100) < 5
    with pytest.raises(ValueError, match="shape"):
        model.predict(np.zeros((2, 4)))
