"""Ensembles (issue 19): train-surrogate --ensemble K, surrogate.load, predict(return_std),
calibration, the directory format and resuming member by member."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import surrogate
import train.cli
from datasets import open_dataset
from datasets.split_data import load_split_data
from solvers.common.atomic import sha256_file
from surrogate.ensemble import EnsembleSurrogate, member_spread
from surrogate.errors import SurrogateFormatError
from surrogate.metadata import new_ensemble_metadata, read_metadata, write_metadata
from surrogate.uncertainty import coverage, fit_std_scale
from tests.ensemble_fixtures import tiny_ensemble


@pytest.fixture(scope="module")
def ens(tmp_path_factory):
    return tiny_ensemble(tmp_path_factory.getbasetemp() / "ens-dcr")


def inside(m, n, seed=1):
    return m.lower + (m.upper - m.lower) * np.random.default_rng(seed).random((n, m.n_in))


def members_of(model_dir):
    meta = read_metadata(model_dir)
    return [surrogate.load(model_dir / e["path"]) for e in meta["ensemble"]["members"]]


def test_predict_return_std_shapes_and_definition(ens):
    _, _, model_dir = ens
    m = surrogate.load(model_dir)
    assert isinstance(m, EnsembleSurrogate) and m.has_std and len(m.members) == 3
    y = inside(m, 7)
    mean, std = m.predict(y, return_std=True)
    assert mean.shape == std.shape == (7, m.n_out) == (7, 882)
    P = np.stack([k.predict(y) for k in members_of(model_dir)])      # each member alone
    assert np.allclose(mean, P.mean(axis=0), rtol=1e-14, atol=0)
    assert np.allclose(std, m.std_scale * P.std(axis=0, ddof=1), rtol=1e-10)
    assert np.all(std > 0)
    assert np.allclose(m(y), mean, rtol=1e-12)                       # __call__ is the mean
    assert np.array_equal(m.predict(y), mean)
    m1, s1 = m.predict(y[0], return_std=True)
    assert m1.shape == s1.shape == (882,) and np.allclose(s1, std[0], rtol=1e-14)
    J = m.jacobian(y)
    assert J.shape == (7, 882, 3)
    assert np.allclose(J, np.mean([k.jacobian(y) for k in members_of(model_dir)], axis=0))
    v = np.random.default_rng(3).normal(size=(7, 3))
    assert np.allclose(m.jvp(y, v), np.einsum("nmd,nd->nm", J, v), rtol=1e-9, atol=1e-14)
    w = np.random.default_rng(4).normal(size=(7, 882))
    assert np.allclose(m.vjp(y, w), np.einsum("nmd,nm->nd", J, w), rtol=1e-9)


def test_std_is_in_physical_units(ens, tmp_path):
    """Targets scaled by 1000 give the same normalised training and 1000x the std."""
    data, _, _ = ens
    ds = open_dataset(data)
    y, c, split = ds["y"].values, ds["c"].values, ds["split"].values.astype(str)
    stds = []
    for k, factor in enumerate((1.0, 1000.0)):
        np.savez(tmp_path / f"d{k}.npz", y=y, c=factor * c, split=split)
        out = tmp_path / f"e{k}"
        assert train.cli.main(["--data", str(tmp_path / f"d{k}.npz"), "--method", "gnvpro",
                               "--config", str(data.parent / "tiny.toml"), "--ensemble", "2",
                               "--out", str(out), "--quiet", "--threads", "1"]) == 0
        m = surrogate.load(out)
        stds.append(m.predict(inside(m, 5), return_std=True)[1])
    assert np.allclose(stds[1], 1000.0 * stds[0], rtol=1e-6)
    assert np.max(np.abs(stds[0])) < 1.0 < np.max(np.abs(stds[1]))


def test_identical_members_have_zero_std(ens, tmp_path):
    _, _, model_dir = ens
    out = tmp_path / "same"
    members = []
    for k in range(3):
        shutil.copytree(model_dir / "members" / "0", out / "members" / str(k))
        members.append({"path": f"members/{k}", "seed": 0,
                        "metadata_sha256": sha256_file(out / "members" / str(k) /
                                                       "metadata.json")})
    meta = read_metadata(model_dir)
    write_metadata(out, new_ensemble_metadata(meta["model"], members, std_scale=2.5,
                                              training=meta["training"],
                                              inputs=meta["inputs"], outputs=meta["outputs"]))
    m = surrogate.load(out)
    y = inside(m, 9)
    mean, std = m.predict(y, return_std=True)
    assert np.all(std == 0.0)
    assert np.allclose(mean, surrogate.load(model_dir / "members" / "0").predict(y),
                       rtol=1e-15, atol=0)


def test_single_model_has_no_std(ens):
    _, _, model_dir = ens
    single = surrogate.load(model_dir / "members" / "1")
    assert not single.has_std
    with pytest.raises(ValueError, match="single model and has no predictive standard"):
        single.predict(inside(single, 2), return_std=True)


def test_tampered_or_missing_member_is_refused(ens, tmp_path):
    _, _, model_dir = ens
    bad = tmp_path / "bad"
    shutil.copytree(model_dir, bad)
    path = bad / "members" / "1" / "metadata.json"
    path.write_text(path.read_text() + " ")
    with pytest.raises(SurrogateFormatError, match="does not match the ensemble"):
        surrogate.load(bad)
    shutil.rmtree(bad / "members" / "2")
    shutil.copyfile(model_dir / "members" / "1" / "metadata.json", path)
    with pytest.raises(SurrogateFormatError, match="member 2 .* is missing"):
        surrogate.load(bad)
    meta = json.loads((model_dir / "metadata.json").read_text())
    meta["format_version"] = 3
    (bad / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SurrogateFormatError, match="unsupported format version 3"):
        surrogate.load(bad)
    with pytest.raises(SurrogateFormatError, match="holds an ensemble"):
        from surrogate.artifact import load_model
        load_model(model_dir)


def test_calibration_factor_fitted_on_validation(ens):
    data, _, model_dir = ens
    m = surrogate.load(model_dir)
    split = load_split_data(data)
    yv, cv = split.y["validation"], split.c["validation"]
    P = m.predict_members(yv)
    scale = fit_std_scale(P.mean(axis=0), member_spread(P), cv)
    meta = read_metadata(model_dir)
    assert meta["format_version"] == 2 and meta["ensemble"]["std_scale"] == scale
    assert m.std_scale == scale
    mean, std = m.predict(yv, return_std=True)
    assert coverage(mean, std, cv, 2) == pytest.approx(0.9545, abs=2 / cv.size)
    summary = json.loads((model_dir / "summary.json").read_text())
    cal = summary["calibration"]
    assert cal["calibrated"]["coverage_2sigma"] == coverage(mean, std, cv, 2)
    assert cal["verdict"] == ("over-confident" if scale > 1.02 else
                              "under-confident" if scale < 0.98 else "calibrated")
    assert len(set(summary["member_seeds"])) == 3


@pytest.mark.parametrize("args, text", [
    (["--ensemble", "1"], "--ensemble 1: needs K >= 2"),
    (["--ensemble", "2", "--compare"], "--ensemble and --compare exclude each other")])
def test_bad_ensemble_options(ens, tmp_path, capsys, args, text):
    data, _, _ = ens
    extra = [] if "--compare" in args else ["--method", "gnvpro"]
    assert train.cli.main(["--data", str(data), *extra, *args, "--out",
                           str(tmp_path / "o")]) == 2
    assert text in capsys.readouterr().err


def test_resume_member_by_member(ens, tmp_path, capsys):
    data, _, model_dir = ens
    out = tmp_path / "resumed"
    shutil.copytree(model_dir, out)
    for name in ("metadata.json", "summary.json", "summary.txt"):   # killed in member 3
        (out / name).unlink()
    shutil.rmtree(out / "members" / "2")
    kept = (out / "members" / "0" / "weights.npz").stat().st_mtime_ns
    args = ["--data", str(data), "--method", "gnvpro", "--config",
            str(data.parent / "tiny.toml"), "--ensemble", "3", "--out", str(out),
            "--threads", "1"]
    assert train.cli.main(args + ["--quiet"]) == 2
    assert "interrupted ensemble" in capsys.readouterr().err
    assert train.cli.main(args + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "member 1/3: finished" in printed and "member 3/3: seed" in printed
    assert (out / "members" / "0" / "weights.npz").stat().st_mtime_ns == kept
    a, b = read_metadata(model_dir), read_metadata(out)
    for k in range(3):
        assert read_metadata(out / "members" / str(k))["weights_sha256"] == \
            read_metadata(model_dir / "members" / str(k))["weights_sha256"]
    assert a["ensemble"]["std_scale"] == b["ensemble"]["std_scale"]
    assert a["training"]["run_id"] == b["training"]["run_id"]
    assert train.cli.main(args + ["--resume", "--quiet"]) == 0      # nothing left to do
    assert "already holds the finished ensemble" in capsys.readouterr().err
