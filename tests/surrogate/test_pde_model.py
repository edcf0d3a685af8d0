"""The PDE as a batched model: same numbers as solve-pde and as the dataset, FD Jacobian."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from solvers.cli import main as solve_pde
from surrogate.serving.pde_model import PDEModel
from tests.uq_fixtures import DCR_COARSE, tiny_dcr


@pytest.fixture(scope="module")
def pde() -> PDEModel:
    return PDEModel("dcr", DCR_COARSE)


@pytest.fixture(scope="module")
def dcr(tmp_path_factory):
    return tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")


def test_output_equals_solve_pde(pde, tmp_path):
    y = np.array([[0.45, 0.18, 1.1], [0.6, 0.25, 2.9]])
    c = pde(y)
    assert c.shape == (2, 882) and c.dtype == np.float64
    for i in range(2):
        np.savetxt(tmp_path / "y.txt", y[i])
        assert solve_pde(["dcr", "--params", str(tmp_path / "y.txt"), "--out",
                          str(tmp_path / "c.npy"), "--set", "n_cells=[12, 12, 6]"]) == 0
        np.testing.assert_array_equal(c[i], np.load(tmp_path / "c.npy"))
    np.testing.assert_array_equal(pde(y[1]), c[1])


def test_from_dataset_reproduces_the_stored_observables(dcr):
    data, model_dir = dcr
    from datasets import open_dataset

    ds = open_dataset(data)
    model = PDEModel.from_dataset(data)
    assert model.solver.settings()["n_cells"] == [12, 12, 6]
    np.testing.assert_allclose(model(ds["y"].values[:3]), ds["c"].values[:3], rtol=1e-12,
                               atol=1e-15)
    meta = json.loads((model_dir / "metadata.json").read_text())
    again = PDEModel.from_surrogate_metadata(meta)
    assert again.solver.settings() == model.solver.settings()
    assert again.input_names == ["depth", "size", "angle"]


def test_finite_difference_jacobian(pde):
    y = np.array([0.5, 0.2, 1.3])
    before = pde.n_solves
    c, J = pde.value_and_jacobian(y)
    assert pde.n_solves - before == 7                   # 1 + 2 d solves, documented
    assert J.shape == (882, 3)
    np.testing.assert_array_equal(c, pde(y))
    rng = np.random.default_rng(0)
    v = rng.normal(size=3)
    t = 1e-3
    directional = (pde(y + t * v) - pde(y - t * v)) / (2 * t)
    scale = np.abs(directional).max()
    assert np.abs(J @ v - directional).max() < 1e-4 * scale
    np.testing.assert_allclose(pde.jvp(y, v), J @ v, rtol=1e-12, atol=1e-14 * scale)
    w = rng.normal(size=882)
    np.testing.assert_allclose(pde.vjp(y, w), J.T @ w, rtol=1e-12)


def test_jacobian_on_the_range_boundary_steps_inward(pde):
    lo = pde.lower
    y_edge = np.array([lo[0], 0.2, 1.3])               # depth on its lower bound
    J_edge = pde.jacobian(y_edge)                       # the solver refuses y below the range
    y_in = y_edge + np.array([2e-3, 0, 0])
    J_in = pde.jacobian(y_in)
    scale = np.abs(J_in[:, 0]).max()
    assert np.abs(J_edge[:, 0] - J_in[:, 0]).max() < 2e-2 * scale


@pytest.mark.parametrize("bad, message", [
    ([0.5, np.nan, 1.0], r"y\[0, 1\] = nan is not finite"),
    (np.zeros((2, 2)), r"shape \(n, 3\)"),
    (["a", "b", "c"], "real numbers"),
    ([0.9, 0.2, 1.0], r"y\[0\] \(depth\) = 0.9 is outside the range"),
])
def test_bad_inputs(pde, bad, message):
    with pytest.raises(ValueError, match=message):
        pde(np.asarray(bad))


def run_python(code: str) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_pde_model_never_imports_torch():
    """The module and everything it imports run with torch unimportable (only the package
    ``surrogate/__init__`` loads torch, so it is bypassed here)."""
    run_python(
        "import sys, types\nfrom pathlib import Path\n"
        "sys.modules['torch'] = None\n"                   # any import of torch fails
        "for name in ('surrogate', 'surrogate.serving'):\n"
        "    pkg = types.ModuleType(name)\n"
        "    pkg.__path__ = [str(Path(name.replace('.', '/')).resolve())]\n"
        "    sys.modules[name] = pkg\n"
        "from surrogate.serving.pde_model import PDEModel\n"
        "m = PDEModel('dcr', {'n_cells': [12, 12, 6]})\n"
        "assert m([0.5, 0.2, 1.0]).shape == (882,)\n")


def test_uq_models_do_not_load_the_server_stack():
    run_python(
        "import sys\nfrom surrogate.serving import GaussianPosterior, PDEModel\n"
        "loaded = {n.split('.')[0] for n in sys.modules}\n"
        "assert not loaded & {'aiohttp', 'umbridge', 'train'}, loaded\n")
