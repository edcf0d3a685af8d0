"""The ensemble through the other tools (issue 19): evaluate-surrogate's coverage, rank
correlation and reliability figure against a direct computation; the ONNX graph's std output
against the torch ensemble; serve-surrogate's model "surrogate_std"."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import umbridge
from scipy.stats import spearmanr

import surrogate
from datasets import open_dataset
from surrogate.metrics import relative_errors
from tests.ensemble_fixtures import tiny_ensemble

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    return tiny_ensemble(tmp_path_factory.getbasetemp() / "ens-dcr")


@pytest.fixture(scope="module")
def report(ens, tmp_path_factory):
    from surrogate.evaluation.cli import main

    _, fresh, model_dir = ens
    out = tmp_path_factory.mktemp("eval") / "report"
    assert main([str(model_dir), "--data", str(fresh), "--out", str(out),
                 "--no-progress"]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_coverage_and_rank_correlation_equal_direct_computation(ens, report):
    _, fresh, model_dir = ens
    out, rep = report
    ds = open_dataset(fresh)
    y, c = ds["y"].values, ds["c"].values
    m = surrogate.load(model_dir)
    with warnings.catch_warnings():               # one fresh sample is outside the box
        warnings.simplefilter("ignore", surrogate.OutOfBoxWarning)
        mean, std = m.predict(y, return_std=True)
        P = np.stack([surrogate.load(model_dir / "members" / str(k)).predict(y)
                      for k in range(3)])
    assert np.allclose(std, m.std_scale * P.std(axis=0, ddof=1), rtol=1e-10)
    inside1 = np.mean(np.abs(c - mean) <= std)
    inside2 = np.mean(np.abs(c - mean) <= 2 * std)
    u = rep["uncertainty"]
    assert u["fresh"]["coverage_1sigma"] == pytest.approx(inside1, abs=1e-12)
    assert u["fresh"]["coverage_2sigma"] == pytest.approx(inside2, abs=1e-12)
    assert u["fresh"]["n_values"] == c.size == 40 * 882
    raw = std / m.std_scale
    assert u["fresh_raw"]["coverage_2sigma"] == pytest.approx(
        np.mean(np.abs(c - mean) <= 2 * raw), abs=1e-12)
    shift = m.torch_model.normalizer.c_shift.numpy()
    actual = np.linalg.norm(mean - c, axis=1) / np.linalg.norm(c - shift, axis=1)
    predicted = np.linalg.norm(std, axis=1) / np.linalg.norm(mean - shift, axis=1)
    assert np.allclose(rep["per_sample"]["error"], actual, rtol=1e-10)
    assert np.allclose(relative_errors(mean, c, shift), actual, rtol=1e-12)
    assert u["fresh"]["spearman"] == pytest.approx(spearmanr(predicted, actual).statistic,
                                                   abs=1e-12)
    assert u["std_scale"] == m.std_scale
    assert u["verdict"] in ("over-confident", "under-confident", "calibrated")
    assert 0 <= u["spearman_ceiling"] <= 1
    r = u["fresh"]["reliability"]
    assert len(r["expected"]) == len(r["observed"]) and r["observed"] == sorted(r["observed"])
    assert (out / "calibration.png").stat().st_size > 10_000
    md = (out / "report.md").read_text()
    assert "## Predictive uncertainty" in md and f"{inside2:.3f}" in md


def test_single_model_report_has_no_uncertainty(ens, tmp_path):
    from surrogate.evaluation.cli import main

    _, fresh, model_dir = ens
    assert main([str(model_dir / "members" / "0"), "--data", str(fresh), "--out",
                 str(tmp_path / "r"), "--no-progress"]) == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "uncertainty" not in rep and not (tmp_path / "r" / "calibration.png").exists()


def test_onnx_std_equals_torch_ensemble(ens, tmp_path):
    pytest.importorskip("onnxruntime")
    from surrogate.export.onnx import export_details, run_onnx

    _, _, model_dir = ens
    m = surrogate.load(model_dir)
    result = export_details(model_dir, tmp_path / "e.onnx", jacobian=True)
    assert result.outputs == ["c", "dc_dy", "std"]
    assert result.check is not None and result.check["std"] <= 1e-10
    y = m.lower + (m.upper - m.lower) * np.random.default_rng(7).random((50, 3))
    out = run_onnx((tmp_path / "e.onnx").read_bytes(), y)
    mean, std = m.predict(y, return_std=True)
    rel = np.abs(out["std"] - std).max(axis=1) / np.abs(std).max(axis=1)
    assert rel.max() <= 1e-10
    assert np.abs(out["c"] - mean).max() <= 1e-12 * np.abs(mean).max()
    assert np.allclose(out["dc_dy"], m.jacobian(y), rtol=1e-9, atol=1e-14)
    import onnx

    props = {p.key: p.value for p in onnx.load(tmp_path / "e.onnx").metadata_props}
    assert json.loads(props["varpro.std_scale"]) == m.std_scale
    assert json.loads(props["varpro.ensemble_size"]) == 3


def test_serve_surrogate_std(ens):
    _, _, model_dir = ens
    proc = subprocess.Popen([sys.executable, "-m", "surrogate.serving", str(model_dir),
                             "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, proc.stderr.read()
        url = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0]
        assert set(umbridge.supported_models(url)) == {"surrogate", "surrogate_std"}
        m = surrogate.load(model_dir)
        y = ((m.lower + m.upper) / 2).tolist()
        client = umbridge.HTTPModel(url, "surrogate_std")
        assert client.get_output_sizes() == [882] and not client.supports_gradient()
        std = np.array(client([y])[0])
        assert np.allclose(std, m.predict(np.array(y), return_std=True)[1], rtol=1e-12)
        mean = np.array(umbridge.HTTPModel(url, "surrogate")([y])[0])
        assert np.allclose(mean, m(np.array(y)), rtol=1e-12)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
