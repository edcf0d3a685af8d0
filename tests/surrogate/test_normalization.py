"""Per-output target scaling (issue 18): exact round trip, statistics, the artifact keeps it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import surrogate
from surrogate import NeuralODE, Normalizer, SeparableModel
from surrogate.normalization import CONSTANT_RTOL, per_output_scales

SCALES = torch.tensor([0.5, 3.0, 40.0, 800.0], dtype=torch.float64)


def targets(n: int = 60, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 4, generator=g, dtype=torch.float64) * SCALES + 5.0


def test_per_output_scales_are_the_standard_deviations() -> None:
    c = targets()
    norm = Normalizer(2, 4, scale_targets="per_output").fit(torch.zeros(60, 2), c)
    assert norm.c_scale.shape == (4,)
    np.testing.assert_allclose(norm.c_scale.numpy(), c.numpy().std(axis=0), rtol=1e-13)
    c_n = norm.transform_c(c)
    # standardised spread; the mean stays (targets are not centred unless asked)
    np.testing.assert_allclose(c_n.numpy().std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(norm.inverse_c(c_n).numpy(), c.numpy(), rtol=1e-15, atol=0)
    centred = Normalizer(2, 4, center_targets=True, scale_targets="per_output").fit(
        torch.zeros(60, 2), c)
    np.testing.assert_allclose(centred.transform_c(c).numpy().mean(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(centred.inverse_c(centred.transform_c(c)).numpy(), c.numpy(),
                               rtol=1e-15, atol=1e-13)


def test_constant_outputs_keep_the_largest_scale() -> None:
    c = targets()
    c[:, 1] = 7.0                                   # constant
    c[:, 2] = 7.0 + 1e-12 * torch.randn(60, dtype=torch.float64)   # constant up to noise
    s = per_output_scales(c)
    assert s[1] == s[2] == s.max() == pytest.approx(800, rel=0.3)
    assert float(1e-12 / s.max()) < CONSTANT_RTOL
    assert torch.equal(per_output_scales(torch.ones(5, 3)), torch.ones(3))


def test_global_scaling_is_unchanged() -> None:
    c = targets()
    norm = Normalizer(2, 4).fit(torch.zeros(60, 2), c)
    assert norm.c_scale.shape == ()
    assert float(norm.c_scale) == pytest.approx(float(c.square().mean().sqrt()), rel=1e-14)
    assert "scale_targets" not in norm.config()        # old metadata stays as it was
    with pytest.raises(ValueError, match="scale_targets"):
        Normalizer(2, 4, scale_targets="per_sample")


def _model(scale_targets: str) -> SeparableModel:
    g = torch.Generator().manual_seed(0)
    norm = Normalizer(3, 4, scale_targets=scale_targets, center_targets=True).fit(
        torch.rand(60, 3, generator=g, dtype=torch.float64), targets())
    model = SeparableModel(NeuralODE(3, 5, 2, generator=g), 4, norm)
    with torch.no_grad():
        model.W.normal_(generator=g)
    return model


def test_artifact_round_trip(tmp_path) -> None:
    """surrogate.load rebuilds the per-output normaliser: bitwise the same predictions on the
    torch and on the NumPy path, and the scale is recorded in metadata.json."""
    model = _model("per_output")
    surrogate.save_surrogate(model, tmp_path / "m", {"problem": "test"})
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["model"]["normalizer"]["scale_targets"] == "per_output"
    loaded = surrogate.load(tmp_path / "m", strict=False)
    y = np.random.default_rng(0).random((7, 3))
    expected = model.predict(y)
    assert np.array_equal(loaded.predict(y), expected)
    np.testing.assert_allclose(loaded(y[:1]), expected[:1], rtol=1e-13)     # NumPy path
    np.testing.assert_allclose(loaded(y), expected, rtol=1e-13)
    # the per-output scales matter: a global model with the same weights predicts otherwise
    other = _model("global")
    other.load_state_dict({k: v for k, v in model.state_dict().items()
                           if k != "normalizer.c_scale"}, strict=False)
    assert not np.allclose(other.predict(y), expected)
