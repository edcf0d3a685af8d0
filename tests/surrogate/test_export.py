"""``export-surrogate`` / ``surrogate.export.export_onnx``: the ONNX graph run by onnxruntime
equals ``surrogate.load`` (values and Jacobians, 1e-10 relative in float64), CLI exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

import surrogate  # noqa: E402
from surrogate import NeuralODE, Normalizer, OutOfBoxWarning, ResNet, SeparableModel  # noqa: E402
from surrogate.encoding import PeriodicEncoding  # noqa: E402
from surrogate.errors import SurrogateFormatError  # noqa: E402
from surrogate.export import cli  # noqa: E402
from surrogate.export.onnx import (  # noqa: E402
    MIN_OPSET,
    ExportCheckError,
    ExportError,
    build_onnx_model,
    check_onnx,
    export_onnx,
    max_relative_error,
    run_onnx,
)

ROOT = Path(__file__).resolve().parents[2]
RTOL = 1e-10
#: a DCR-like parameter box: depth, size, angle (pi-periodic in the angle)
DCR_BOX = {"names": ["depth", "size", "angle"], "lower": [0.2, 0.1, 0.0],
           "upper": [0.6, 0.3, float(np.pi)], "box": "test"}
BOX = {"names": ["a", "b", "c"], "lower": [0.0, -1.0, 0.5], "upper": [1.0, 1.0, 2.0],
       "box": "test"}
KINDS = ["neural_ode", "resnet", "dcr_periodic", "per_output"]


def make_model(kind: str, *, seed: int = 1, n_out: int = 9,
               dtype: torch.dtype = torch.float64) -> SeparableModel:
    """A small trained-looking model: random weights, fitted normalisation; ``dcr_periodic``
    has the DCR input encoding (angle y2, period pi: 3 parameters -> 4 network inputs);
    ``per_output`` scales its targets (spreads 0.1 ... 1000) one by one (issue 18)."""
    g = torch.Generator().manual_seed(seed)
    periodic = kind == "dcr_periodic"
    n_net = 4 if periodic else 3
    F = (ResNet(n_net, 6, 4, generator=g, dtype=dtype) if kind == "resnet"
         else NeuralODE(n_net, 6, 4, generator=g, dtype=dtype))
    with torch.no_grad():                      # non-zero biases: every weight matters
        F.b_in.normal_(generator=g)
        F.b.normal_(std=0.3, generator=g)
    per_output = kind == "per_output"
    spread = torch.logspace(-1, 3, n_out, dtype=torch.float64) if per_output else 1.0
    norm = Normalizer(n_net, n_out, center_targets=True,
                      scale_targets="per_output" if per_output else "global").fit(
        torch.rand(40, n_net, dtype=torch.float64, generator=g) * 2,
        3 + torch.rand(40, n_out, dtype=torch.float64, generator=g) * spread)
    model = SeparableModel(F, n_out, norm,
                           encoding=PeriodicEncoding(3, {2: np.pi}) if periodic else None)
    with torch.no_grad():
        model.W.normal_(generator=g)
    return model


def save(model: SeparableModel, directory: Path, kind: str) -> Path:
    box = DCR_BOX if kind == "dcr_periodic" else BOX
    surrogate.save_surrogate(model, directory, {"problem": "dcr" if "dcr" in kind else "test"},
                             extra={"inputs": box})
    return directory


@pytest.fixture(scope="module", params=KINDS)
def exported(request, tmp_path_factory):
    """(kind, model directory, ONNX bytes with the Jacobian output)."""
    root = tmp_path_factory.mktemp(request.param)
    d = save(make_model(request.param), root / "model", request.param)
    path = export_onnx(d, root / "model.onnx", jacobian=True)
    return request.param, d, path.read_bytes()


def random_inputs(n: int, kind: str, seed: int = 0) -> np.ndarray:
    """Uniform on the training box widened by 25% on each side (extrapolation too; the angle
    then crosses its period)."""
    box = DCR_BOX if kind == "dcr_periodic" else BOX
    lo, hi = np.array(box["lower"]), np.array(box["upper"])
    lo, hi = lo - 0.25 * (hi - lo), hi + 0.25 * (hi - lo)
    return lo + (hi - lo) * np.random.default_rng(seed).random((n, 3))


def reference(d: Path):
    m = surrogate.load(d)
    m.strict = False
    return m


def quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OutOfBoxWarning)
        return fn(*args)


# ----------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("n", [1, 100])
def test_onnx_values_equal_surrogate_load(exported, n):
    kind, d, data = exported
    m = reference(d)
    y = random_inputs(n, kind, seed=n)
    out = run_onnx(data, y)
    c_ref = quiet(m, y)                        # n = 1: NumPy path, n = 100: torch path
    assert out["c"].shape == (n, m.n_out) and out["c"].dtype == np.float64
    np.testing.assert_allclose(out["c"], c_ref, rtol=RTOL, atol=0)
    np.testing.assert_allclose(out["c"], quiet(m.predict, y), rtol=RTOL, atol=0)
    assert max_relative_error(out["c"], c_ref) <= RTOL


@pytest.mark.parametrize("n", [1, 100])
def test_onnx_jacobian_equals_model_jacobian(exported, n):
    kind, d, data = exported
    m = reference(d)
    y = random_inputs(n, kind, seed=10 + n)
    J = run_onnx(data, y)["dc_dy"]
    J_ref = quiet(m.jacobian, y)
    assert J.shape == (n, m.n_out, 3) and J.dtype == np.float64
    assert max_relative_error(J, J_ref) <= RTOL
    np.testing.assert_allclose(J, J_ref, rtol=RTOL, atol=RTOL * np.abs(J_ref).max())
    # and the torch forward mode (another implementation than the NumPy mirror)
    np.testing.assert_allclose(J, m._torch_jacobian(y), rtol=RTOL,
                               atol=RTOL * np.abs(J_ref).max())


def test_periodic_input_is_periodic_in_the_graph(tmp_path):
    """The DCR angle enters as (cos, sin) inside the graph: y and y + period give the same c."""
    d = save(make_model("dcr_periodic"), tmp_path / "m", "dcr_periodic")
    data = export_onnx(d, tmp_path / "m.onnx").read_bytes()
    y = random_inputs(20, "dcr_periodic")
    shifted = y + np.array([0.0, 0.0, np.pi])
    np.testing.assert_allclose(run_onnx(data, shifted)["c"], run_onnx(data, y)["c"],
                               rtol=1e-12)


def test_comparison_can_fail(tmp_path):
    """The check is sharp: a model whose W differs by 1e-8 relative is told apart, and
    check_onnx refuses a graph that does not match its reference."""
    kind = "dcr_periodic"
    a, b = make_model(kind), make_model(kind)
    with torch.no_grad():
        b.W.mul_(1 + 1e-8)
    da, db = save(a, tmp_path / "a", kind), save(b, tmp_path / "b", kind)
    data = export_onnx(da, tmp_path / "a.onnx", jacobian=True).read_bytes()
    y = random_inputs(50, kind)
    assert max_relative_error(run_onnx(data, y)["c"], quiet(reference(db), y)) > 10 * RTOL
    errors = check_onnx(data, reference(da), y, tolerance=RTOL)
    assert errors["c"] <= RTOL and errors["dc_dy"] <= RTOL
    with pytest.raises(ExportCheckError, match="does not reproduce"):
        check_onnx(data, reference(db), y, tolerance=RTOL)


# ----------------------------------------------------------------------------- interface
def test_graph_interface(exported):
    kind, d, data = exported
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("y", "tensor(double)", ["batch", 3])
    outs = {o.name: (o.type, o.shape) for o in session.get_outputs()}
    assert outs == {"c": ("tensor(double)", ["batch", 9]),
                    "dc_dy": ("tensor(double)", ["batch", 9, 3])}
    model = onnx.load_from_string(data)
    assert model.opset_import[0].version == 13 and model.ir_version == 7
    props = {p.key: p.value for p in model.metadata_props}
    box = DCR_BOX if kind == "dcr_periodic" else BOX
    assert json.loads(props["varpro.input_names"]) == box["names"]
    assert json.loads(props["varpro.lower"]) == box["lower"]
    assert props["varpro.weights_sha256"] == reference(d).metadata["weights_sha256"]
    # every initializer of the float64 model is float64 (no float32-rounded constant)
    kinds = {i.data_type for i in model.graph.initializer}
    assert kinds <= {onnx.TensorProto.DOUBLE, onnx.TensorProto.INT64}


def test_value_only_graph_and_empty_batch(tmp_path):
    d = save(make_model("resnet"), tmp_path / "m", "resnet")
    data = export_onnx(d, tmp_path / "m.onnx").read_bytes()
    assert [o.name for o in onnx.load_from_string(data).graph.output] == ["c"]
    assert run_onnx(data, np.zeros((0, 3)))["c"].shape == (0, 9)


@pytest.mark.parametrize("opset", [MIN_OPSET, 17, onnx.defs.onnx_opset_version()])
def test_opsets(tmp_path, opset):
    d = save(make_model("dcr_periodic"), tmp_path / "m", "dcr_periodic")
    data = export_onnx(d, tmp_path / "m.onnx", jacobian=True, opset=opset).read_bytes()
    assert onnx.load_from_string(data).opset_import[0].version == opset
    y = random_inputs(5, "dcr_periodic")
    assert max_relative_error(run_onnx(data, y)["c"], quiet(reference(d), y)) <= RTOL


@pytest.mark.parametrize("opset", [MIN_OPSET - 1, 10_000, True, 13.5])
def test_bad_opset(tmp_path, opset):
    d = save(make_model("resnet"), tmp_path / "m", "resnet")
    with pytest.raises(ExportError, match="--opset"):
        export_onnx(d, tmp_path / "m.onnx", opset=opset)
    assert not (tmp_path / "m.onnx").exists()


def test_float32_network(tmp_path):
    """A float32 network is computed in float32 inside the graph, as torch does."""
    d = save(make_model("neural_ode", dtype=torch.float32), tmp_path / "m", "neural_ode")
    data = export_onnx(d, tmp_path / "m.onnx", jacobian=True).read_bytes()
    m = reference(d)
    y = random_inputs(30, "neural_ode")
    out = run_onnx(data, y)
    assert out["c"].dtype == np.float64
    assert max_relative_error(out["c"], quiet(m.predict, y)) < 1e-6
    assert max_relative_error(out["dc_dy"], quiet(m.jacobian, y)) < 1e-4


def test_unsupported_model_is_refused():
    class Shift(torch.nn.Module):
        n_in = n_out = 3

        def forward(self, y):
            return y + 1

    model = make_model("resnet")
    model.encoding = Shift()
    with pytest.raises(ExportError, match="input encoding Shift"):
        build_onnx_model([model])
    model = make_model("resnet")
    model.features = torch.nn.Linear(3, 6)
    with pytest.raises(ExportError, match="feature extractor Linear"):
        build_onnx_model([model])


# ----------------------------------------------------------------------------- ensembles
def test_ensemble_mean_and_std():
    """The ensemble layout (issue 19): c = members' mean, std = their spread, dc_dy = mean
    Jacobian; identical members have std 0."""
    members = [make_model("dcr_periodic", seed=s) for s in (1, 2, 3)]
    y = random_inputs(25, "dcr_periodic")
    out = run_onnx(build_onnx_model(members, jacobian=True, std=True, std_scale=1.5)
                   .SerializeToString(), y)
    ms = [surrogate.SurrogateModel(m, {}) for m in members]
    cs = np.stack([m(y) for m in ms])
    np.testing.assert_allclose(out["c"], cs.mean(axis=0), rtol=RTOL)
    np.testing.assert_allclose(out["std"], 1.5 * cs.std(axis=0, ddof=1), rtol=1e-8)
    Js = np.stack([m.jacobian(y) for m in ms])
    assert max_relative_error(out["dc_dy"], Js.mean(axis=0)) <= RTOL
    same = run_onnx(build_onnx_model([members[0]] * 2, std=True).SerializeToString(), y)
    assert np.all(same["std"] == 0.0)
    np.testing.assert_allclose(same["c"], cs[0], rtol=RTOL)
    with pytest.raises(ExportError, match="std output needs"):
        build_onnx_model(members[:1], std=True)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save(make_model("dcr_periodic"), tmp_path_factory.mktemp("cli") / "model",
                "dcr_periodic")


def test_cli_writes_the_model(model_dir, tmp_path, capsys):
    out = tmp_path / "sub" / "model.onnx"                # missing folders are created
    assert cli.main([str(model_dir), "--onnx", str(out), "--jacobian"]) == 0
    text = capsys.readouterr().out
    assert "input y (batch, 3) float64 -> c (batch, 9), dc_dy (batch, 9, 3)" in text
    assert "max relative deviation" in text
    y = random_inputs(7, "dcr_periodic")
    assert max_relative_error(run_onnx(out.read_bytes(), y)["c"],
                              quiet(reference(model_dir), y)) <= RTOL
    old = out.read_bytes()                                 # an existing file is replaced
    assert cli.main([str(model_dir), "--onnx", str(out)]) == 0
    assert out.read_bytes() != old and sorted(os.listdir(out.parent)) == ["model.onnx"]


def test_cli_missing_model_dir(tmp_path, capsys):
    missing = tmp_path / "nope"
    with pytest.raises(SurrogateFormatError) as info:
        surrogate.load(missing)
    assert cli.main([str(missing), "--onnx", str(tmp_path / "m.onnx")]) == 2
    err = capsys.readouterr().err
    assert err == f"export-surrogate: error: {info.value}\n"
    assert not (tmp_path / "m.onnx").exists()


def test_cli_corrupt_model_dir(model_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "weights.npz").write_bytes(b"garbage")
    assert cli.main([str(bad), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "SHA-256" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["folder", "parent_is_file", "fifo", "link_to_fifo"])
def test_cli_bad_output_path(model_dir, tmp_path, capsys, case):
    if case == "folder":
        out, expect = tmp_path, "is a folder; refusing"
    elif case == "parent_is_file":
        (tmp_path / "file").write_text("x")
        out, expect = tmp_path / "file" / "m.onnx", "is not a folder"
    else:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        out, expect = fifo, "is a FIFO; refusing"
        if case == "link_to_fifo":
            (tmp_path / "link.onnx").symlink_to(fifo)
            out = tmp_path / "link.onnx"
    before = sorted(os.listdir(tmp_path))
    assert cli.main([str(model_dir), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("export-surrogate: error: ONNX output") and expect in err
    assert sorted(os.listdir(tmp_path)) == before           # nothing left behind


def test_cli_bad_options(model_dir, tmp_path, capsys):
    assert cli.main([str(model_dir), "--onnx", str(tmp_path / "m.onnx"), "--opset", "7"]) == 2
    assert "--opset must be a whole number from 13" in capsys.readouterr().err
    assert cli.main([str(model_dir)]) == 2                   # --onnx is required
    assert "--onnx" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_cli_without_onnx_package(model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)           # import onnx -> ImportError
    monkeypatch.delitem(sys.modules, "surrogate.export.onnx")
    assert cli.main([str(model_dir), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "pip install 'varpro-surrogates[export]'" in capsys.readouterr().err


def test_cli_disk_error_is_exit_1(model_dir, tmp_path, capsys, monkeypatch):
    import solvers.common.atomic as atomic

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    assert cli.main([str(model_dir), "--onnx", str(tmp_path / "m.onnx")]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []


def test_cli_as_a_program(model_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "m.onnx"
    proc = subprocess.run([sys.executable, "-m", "surrogate.export.cli", str(model_dir),
                           "--onnx", str(out), "--jacobian"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "wrote" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "surrogate.export.cli",
                           str(tmp_path / "missing"), "--onnx", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "export-surrogate: error:" in proc.stderr
