"""Saving and loading surrogates."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import surrogate
from surrogate import (
    NeuralODE,
    Normalizer,
    ResNet,
    SeparableModel,
    SurrogateFormatError,
    load,
    save_surrogate,
)


def save_model(directory: Path, architecture: str) -> SeparableModel:
    g = torch.Generator().manual_seed(0)
    F = (NeuralODE(3, 4, 2, generator=g) if architecture == "neural_ode"
         else ResNet(3, 4, 3, generator=g))
    norm = Normalizer(3, 5, center_targets=True).fit(
        torch.rand(20, 3, dtype=torch.float64), 50 + torch.rand(20, 5, dtype=torch.float64))
    model = SeparableModel(F, 5, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    save_surrogate(model, directory, {"method": "test"})
    return model


@pytest.fixture(params=["neural_ode", "resnet"])
def saved(request, tmp_path: Path) -> tuple[SeparableModel, Path]:
    return save_model(tmp_path / "m", request.param), tmp_path / "m"


def test_roundtrip_gives_identical_predictions(saved):
    model, d = saved
    y = np.random.default_rng(0).normal(size=(7, 3))
    loaded = load(d)
    assert np.array_equal(loaded.predict(y), model.predict(y))
    assert loaded.metadata["training"] == {"method": "test"}
    assert (loaded.n_in, loaded.n_out) == (3, 5)


def test_tampered_weights_are_refused(saved):
    _, d = saved
    data = bytearray((d / "weights.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "weights.npz").write_bytes(bytes(data))
    with pytest.raises(SurrogateFormatError, match="SHA-256"):
        load(d)


def test_wrong_version_is_refused(saved):
    _, d = saved
    meta = json.loads((d / "metadata.json").read_text())
    meta["format_version"] = 99
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SurrogateFormatError, match="unsupported format version 99"):
        load(d)


def test_inconsistent_metadata_is_refused(saved):
    _, d = saved
    meta = json.loads((d / "metadata.json").read_text())
    meta["model"]["features"]["width"] = 9
    (d / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SurrogateFormatError, match="do not match"):
        load(d)


def test_missing_directory(tmp_path):
    with pytest.raises(SurrogateFormatError, match="not a surrogate model directory"):
        load(tmp_path / "nothing")


def test_loading_needs_only_numpy_and_torch(tmp_path):
    """A fresh interpreter loads and calls the surrogate without dolfinx/petsc4py/datasets."""
    d = tmp_path / "m"
    save_model(d, "neural_ode")
    code = (
        "import sys, numpy as np\n"
        "from surrogate import load\n"
        "import train.gnvpro, train.multilevel\n"
        f"s = load({str(d)!r})\n"
        "assert s.predict(np.zeros((2, 3))).shape == (2, 5)\n"
        "bad = [m for m in ('dolfinx', 'petsc4py', 'mpi4py', 'datasets') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_load_surrogate_is_a_deprecated_alias_of_load(tmp_path):
    d = tmp_path / "m"
    model = save_model(d, "resnet")
    y = np.random.default_rng(1).uniform(size=(3, model.n_in))
    with pytest.warns(FutureWarning, match="use surrogate.load"):
        old = surrogate.load_surrogate(d)
    np.testing.assert_array_equal(old.predict(y), load(d).predict(y))
