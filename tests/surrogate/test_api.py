"""``surrogate.load``: the callable UQ model (values, derivatives, box, input checks)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import surrogate
from surrogate import (
    NeuralODE,
    Normalizer,
    OutOfBoxWarning,
    ResNet,
    SeparableModel,
    load,
    save_surrogate,
)
from surrogate.encoding import PeriodicEncoding
from surrogate.numpy_forward import build_numpy_forward
from tests.uq_fixtures import tiny_dcr

BOX = {"names": ["a", "b", "c"], "lower": [0.0, -1.0, 0.5], "upper": [1.0, 1.0, 2.0],
       "box": "training split min/max, physical units"}


@pytest.fixture(scope="module")
def dcr(tmp_path_factory):
    return tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")


def make_model(architecture: str, n_steps: int = 4, width: int = 6, n_out: int = 7,
               dtype=torch.float64) -> SeparableModel:
    g = torch.Generator().manual_seed(1)
    F = (NeuralODE(3, width, n_steps, generator=g, dtype=dtype)
         if architecture == "neural_ode" else ResNet(3, width, n_steps, generator=g, dtype=dtype))
    norm = Normalizer(3, n_out, center_targets=True).fit(
        torch.rand(30, 3, dtype=torch.float64, generator=g) * 2,
        3 + torch.rand(30, n_out, dtype=torch.float64, generator=g))
    model = SeparableModel(F, n_out, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    return model


@pytest.fixture(params=["neural_ode", "resnet"])
def saved(request, tmp_path):
    model = make_model(request.param)
    save_surrogate(model, tmp_path / "m", {"method": "test"},
                   extra={"inputs": BOX, "outputs": {"names": None, "coords": {}}})
    return model, tmp_path / "m"


def inside(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    lo, hi = np.array(BOX["lower"]), np.array(BOX["upper"])
    return lo + (hi - lo) * rng.random((n, 3))


@pytest.mark.parametrize("n", [1, 5, 40])       # 1, 5: NumPy path; 40: torch path
def test_values_equal_model_predict(saved, n):
    model, d = saved
    m = surrogate.load(d)
    assert m.uses_numpy_path
    y = inside(n)
    np.testing.assert_allclose(m(y), model.predict(y), rtol=1e-13, atol=1e-13)
    assert m(y[0]).shape == (7,) and m(y).dtype == np.float64


def test_numpy_path_matches_torch_for_every_batch_size(saved):
    model, d = saved
    m = surrogate.load(d)
    y = inside(20, seed=3)
    c_np, J_np = m._fast.value_and_jacobian(y)
    np.testing.assert_allclose(c_np, model.predict(y), rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(J_np, m._torch_jacobian(y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m._fast.value(y), c_np, rtol=1e-14, atol=1e-14)


def test_float32_and_encoding_fall_back_to_torch(tmp_path):
    model = make_model("neural_ode", dtype=torch.float32)
    assert build_numpy_forward(model) is None
    save_surrogate(model, tmp_path / "m", extra={"inputs": BOX})
    m = surrogate.load(tmp_path / "m")
    assert not m.uses_numpy_path
    y = inside(3)
    np.testing.assert_allclose(m(y), model.predict(y), rtol=1e-6)
    J = m.jacobian(y)                                  # torch forward mode, float32 network
    h = 1e-3
    fd = np.stack([(m(y + h * e) - m(y - h * e)) / (2 * h) for e in np.eye(3)], axis=2)
    np.testing.assert_allclose(J, fd, rtol=2e-2, atol=2e-2 * np.abs(fd).max())
    np.testing.assert_allclose(m.vjp(y, np.ones(7)), J.sum(axis=1), rtol=1e-4, atol=1e-4)
    enc = make_model("resnet")
    enc.encoding = torch.nn.Identity()               # contract 3: any encoding -> torch path
    assert build_numpy_forward(enc) is None


@pytest.mark.parametrize("architecture", ["neural_ode", "resnet"])
def test_periodic_encoding_runs_on_the_numpy_path(tmp_path, architecture):
    """A periodic input (the DCR angle) stays on the NumPy path: values equal model.predict,
    the Jacobian (chain rule through cos/sin) equals torch's and central differences."""
    g = torch.Generator().manual_seed(2)
    enc = PeriodicEncoding(3, {2: np.pi})
    F = (NeuralODE(4, 6, 4, generator=g) if architecture == "neural_ode"
         else ResNet(4, 6, 4, generator=g))
    norm = Normalizer(4, 7, center_targets=True).fit(
        torch.rand(30, 4, dtype=torch.float64, generator=g),
        3 + torch.rand(30, 7, dtype=torch.float64, generator=g))
    model = SeparableModel(F, 7, norm, encoding=enc)
    with torch.no_grad():
        model.W.normal_(generator=g)
    save_surrogate(model, tmp_path / "m", extra={"inputs": BOX})
    m = surrogate.load(tmp_path / "m")
    assert m.uses_numpy_path and m.n_in == 3
    y = inside(5, seed=7)
    np.testing.assert_allclose(m(y), model.predict(y), rtol=1e-13, atol=1e-13)
    c_np, J_np = m._fast.value_and_jacobian(y)
    np.testing.assert_allclose(J_np, m._torch_jacobian(y), rtol=1e-12, atol=1e-12)
    h = 1e-6
    fd = np.stack([(model.predict(y + h * e) - model.predict(y - h * e)) / (2 * h)
                   for e in np.eye(3)], axis=2)
    np.testing.assert_allclose(J_np, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


@pytest.mark.parametrize("n", [2, 30, 1100])
def test_jacobian_jvp_vjp_against_finite_differences_and_adjoint(saved, n):
    _, d = saved
    m = surrogate.load(d)
    y = inside(n, seed=5)
    J = m.jacobian(y)
    assert J.shape == (n, 7, 3)
    h = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd = (m(y + e) - m(y - e)) / (2 * h)
        np.testing.assert_allclose(J[:, :, k], fd, rtol=1e-6, atol=1e-7)
    rng = np.random.default_rng(6)
    v, w = rng.normal(size=(n, 3)), rng.normal(size=(n, 7))
    Jv, JTw = m.jvp(y, v), m.vjp(y, w)
    np.testing.assert_allclose(Jv, np.einsum("nmd,nd->nm", J, v), rtol=1e-12, atol=1e-12)
    # adjoint test <J v, w> = <v, J^T w> per sample
    np.testing.assert_allclose(np.sum(Jv * w, axis=1), np.sum(v * JTw, axis=1), rtol=1e-11)
    c, J2 = m.value_and_jacobian(y)
    np.testing.assert_allclose(J2, J, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c, m(y), rtol=1e-13)
    assert m.jvp(y[0], v[0]).shape == (7,) and m.vjp(y[0], w[0]).shape == (3,)


def test_box_warning_and_strict_error(saved):
    _, d = saved
    m = surrogate.load(d)
    np.testing.assert_array_equal(m.lower, BOX["lower"])
    assert m.input_names == ["a", "b", "c"]
    y = inside(2)
    y[1, 2] = 2.5
    with pytest.warns(OutOfBoxWarning, match=r"y\[1, 2\] \(c\) = 2.5 is outside"):
        m(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(inside(3))                                   # inside: no warning
    strict = surrogate.load(d, strict=True)
    with pytest.raises(ValueError, match=r"y\[1, 2\] \(c\) = 2.5 is outside the training box"):
        strict(y)
    assert list(strict.in_box(y)) == [True, False]


@pytest.mark.parametrize("bad, message", [
    (np.array([0.5, np.nan, 1.0]), r"y\[0, 1\] = nan is not finite"),
    (np.array([[0.5, 0.0, 1.0], [0.5, 0.0, np.inf]]), r"y\[1, 2\] = inf is not finite"),
    (np.zeros((2, 4)), r"shape \(n, 3\) or \(3,\), got \(2, 4\)"),
    (np.zeros((2, 3, 1)), r"got \(2, 3, 1\)"),
    (np.array(["1", "2", "3"]), "real numbers"),
    (np.array([1 + 1j, 0, 1]), "real numbers"),
    (np.array([True, False, True]), "real numbers"),
])
def test_bad_inputs_raise_value_errors(saved, bad, message):
    _, d = saved
    m = surrogate.load(d)
    for fn in (m, m.jacobian, lambda y: m.jvp(y, np.ones(3)), lambda y: m.vjp(y, np.ones(7))):
        with pytest.raises(ValueError, match=message):
            fn(bad)
    with pytest.raises(ValueError, match="v must have shape"):
        m.jvp(inside(2), np.ones(4))


def test_predict_refuses_nan_and_warns_outside_the_box(saved):
    _, d = saved
    s = load(d)
    with pytest.raises(ValueError, match=r"y\[0, 1\] = nan is not finite"):
        s.predict(np.array([[0.5, np.nan, 1.0]]))
    with pytest.warns(OutOfBoxWarning, match="outside the training box"):
        s.predict(np.array([[0.5, 0.0, 3.0]]))


def test_old_models_without_box_metadata_still_load(tmp_path):
    model = make_model("resnet")
    save_surrogate(model, tmp_path / "m")
    m = surrogate.load(tmp_path / "m")
    assert m.lower is None and m.input_names == ["y0", "y1", "y2"]
    np.testing.assert_allclose(m(inside(2)), model.predict(inside(2)), rtol=1e-13)


def test_trained_model_reproduces_training_time_predictions(dcr):
    """load() on a model written by train-surrogate: summary.json errors recomputed from the
    dataset's stored test split agree, and the metadata carries the contract-1 entries."""
    data, model_dir = dcr
    from datasets import open_dataset

    m = surrogate.load(model_dir)
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["inputs"]["names"] == ["depth", "size", "angle"]
    train = open_dataset(data, split="train")
    np.testing.assert_array_equal(m.lower, train["y"].values.min(axis=0))
    np.testing.assert_array_equal(m.upper, train["y"].values.max(axis=0))
    assert set(meta["outputs"]["coords"]) == {"receiver_x1", "receiver_x2", "direction"}
    np.testing.assert_array_equal(m.output_coords["receiver_x1"],
                                  train["receiver_x1"].values)
    summary = json.loads((model_dir / "summary.json").read_text())
    shift = m.torch_model.normalizer.c_shift.numpy()
    for split in ("train", "test"):
        ds = open_dataset(data, split=split)
        y, c = ds["y"].values, ds["c"].values
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OutOfBoxWarning)   # test samples may lie outside
            pred_small = np.concatenate([m(y[i:i + 4]) for i in range(0, len(y), 4)])
            pred = m(y)
        err = np.linalg.norm(pred_small - c, axis=1) / np.linalg.norm(c - shift, axis=1)
        assert err.mean() == pytest.approx(summary["errors"][split]["mean"], rel=1e-9)
        np.testing.assert_allclose(pred_small, load(model_dir).torch_model.predict(y),
                                   rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(pred, pred_small, rtol=1e-12, atol=1e-14)


def test_import_and_load_never_import_dolfinx_petsc_mpi(dcr):
    _, model_dir = dcr
    code = (
        "import sys, numpy as np\n"
        "import surrogate\n"
        f"m = surrogate.load({str(model_dir)!r})\n"
        "y = (m.lower + m.upper) / 2\n"
        "assert m(y).shape == (882,) and m.jacobian(y).shape == (882, 3)\n"
        "bad = [k for k in ('dolfinx', 'petsc4py', 'mpi4py', 'dolfinx_solver') "
        "if k in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_device_gives_the_cpu_values(saved):
    _, d = saved
    cpu, gpu = surrogate.load(d), surrogate.load(d, device="cuda")
    y = inside(40)                                     # torch path on the GPU
    np.testing.assert_allclose(gpu(y), cpu(y), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(gpu.vjp(y, np.ones(7)), cpu.vjp(y, np.ones(7)), rtol=1e-11)
    assert gpu._torch_jacobian(y[:2]).shape == (2, 7, 3)
