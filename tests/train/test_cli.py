"""``train-surrogate`` end to end on a small .npz file."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import train.cli as cli
import train.run as train_run
from datasets.split_data import seeded_split
from surrogate import load
from train.config import ConfigError, merge_config, resolve_config

TINY = """
[model]
width = 4
levels = [2, 4]
[gnvpro]
work_units_per_level = 24
r_max = 5
[gn]
work_units_per_level = 24
r_max = 5
[lbfgsvpro]
work_units_per_level = 24
[adam]
work_units_per_level = 8
batch_size = 8
[slimtrain]
width = 4
depth = 2
epochs = 4
batch_size = 8
"""


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    return path


def test_train_writes_a_loadable_surrogate(data, tiny, tmp_path, capsys):
    out = tmp_path / "model"
    rc = cli.main(["--data", str(data), "--method", "gnvpro", "--config", str(tiny),
                   "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "gnvpro L1/2 d=2 it    0" in printed and "GNvpro" in printed
    for name in ("weights.npz", "metadata.json", "history.csv", "convergence.png",
                 "summary.json", "summary.txt"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["errors"]) == {"train", "validation", "test"}
    assert [summary["errors"][s]["n"] for s in ("train", "validation", "test")] == [40, 20, 20]
    meta = json.loads((out / "metadata.json").read_text())["training"]
    assert meta["method"] == "gnvpro" and meta["data"]["split"] == "seeded"
    assert meta["data"]["sha256"] and meta["package_version"]
    with open(out / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["level"] for r in rows} == {"0", "1"}
    assert float(rows[-1]["work_units"]) <= 48
    # the saved model is the one selected on validation and reproduces the summary
    raw = np.load(data)
    split = seeded_split(80, [0.5, 0.25, 0.25], 0)
    s = load(out)
    err = np.linalg.norm(s.predict(raw["y"][split == "test"]) - raw["c"][split == "test"],
                         axis=1) / np.linalg.norm(raw["c"][split == "test"], axis=1)
    assert err.mean() == pytest.approx(summary["errors"]["test"]["mean"], rel=1e-10)
    best = min(float(r["val_rel_err"]) for r in rows)
    assert summary["selected"]["val_rel_err"] == pytest.approx(best)


def test_resume_after_interruption_matches_an_uninterrupted_run(data, tiny, tmp_path,
                                                                monkeypatch):
    args = ["--data", str(data), "--method", "lbfgsvpro", "--config", str(tiny), "--quiet"]
    assert cli.main([*args, "--out", str(tmp_path / "ref")]) == 0
    real_save = train_run.save_checkpoint

    def save_then_crash(*a, **kw):
        real_save(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*args, "--out", str(tmp_path / "run")])
    monkeypatch.setattr(train_run, "save_checkpoint", real_save)
    assert (tmp_path / "run" / "checkpoint" / "state.json").is_file()
    # without --resume the interrupted run is not overwritten
    assert cli.main([*args, "--out", str(tmp_path / "run")]) == 2
    assert cli.main([*args, "--resume", "--out", str(tmp_path / "run")]) == 0

    def losses(d):
        with open(d / "history.csv") as fh:
            return [(r["level"], r["iteration"], r["loss"], r["work_units"])
                    for r in csv.DictReader(fh)]

    assert losses(tmp_path / "run") == losses(tmp_path / "ref")
    y = np.random.default_rng(0).uniform(size=(5, 4))
    assert np.array_equal(load(tmp_path / "run").predict(y),
                          load(tmp_path / "ref").predict(y))


def test_compare_prints_a_table_for_all_methods(data, tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = cli.main(["--data", str(data), "--compare", "--config", str(tiny), "--quiet",
                   "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    for label in ("Full GN", "ADAM", "L-BFGSvpro", "GNvpro", "slimTrain"):
        assert label in text
    assert (out / "compare.txt").is_file() and (out / "convergence.png").is_file()
    assert len(json.loads((out / "compare.json").read_text())) == 5


def test_compare_a_subset_of_methods(data, tiny, tmp_path, capsys):
    out = tmp_path / "cmp"
    assert cli.main(["--data", str(data), "--compare", "--methods", "lbfgsvpro,gnvpro",
                     "--config", str(tiny), "--quiet", "--out", str(out)]) == 0
    rows = json.loads((out / "compare.json").read_text())
    assert [r["method"] for r in rows] == ["gnvpro", "lbfgsvpro"]      # in METHODS order
    assert not (out / "adam").exists()
    assert "Full GN" not in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--method", "gnvpro", "--data", "missing.npz"], "no such file"),
    (["--method", "sgd"], "invalid choice"),
    (["--method", "gnvpro", "--config", "BAD"], "unknown key gnvpro.rmax"),
    (["--method", "gnvpro", "--device", "tpu"], "expected cpu, cuda"),
    ([], "one of --method or --compare is required"),
    (["--compare", "--methods", "gnvpro,sgd"], "unknown method(s) ['sgd']"),
    (["--method", "gnvpro", "--methods", "gn"], "--methods selects the methods of --compare"),
])
def test_bad_input_gives_a_clear_error(data, tmp_path, capsys, extra, message):
    bad = tmp_path / "bad.toml"
    bad.write_text("[gnvpro]\nrmax = 3\n")
    extra = [str(bad) if e == "BAD" else e for e in extra]
    argv = ["--data", str(data), "--out", str(tmp_path / "o"), *extra]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "train-surrogate: error:" in err and message in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_is_refused(data, tmp_path, capsys):
    assert cli.main(["--data", str(data), "--method", "gnvpro", "--device", "cuda",
                     "--out", str(tmp_path / "o")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_config_defaults_per_problem_and_validation():
    cdr = resolve_config(merge_config({}), "cdr", seed=3, preset="paper")
    dcr = resolve_config(merge_config({}), "dcr", seed=3, preset="paper")
    assert (cdr["model"]["width"], dcr["model"]["width"]) == (8, 16)
    assert cdr["model"]["levels"] == [2, 4, 8] and cdr["model"]["final_time"] == 4.0
    assert (cdr["gnvpro"]["work_units_per_level"], dcr["gnvpro"]["work_units_per_level"]) == (
        200, 400)
    assert cdr["gnvpro"]["r_max"] == 20 and cdr["loss"]["alpha1"] == 1e-10
    assert not cdr["normalization"]["center_targets"] and dcr["normalization"]["center_targets"]
    assert not cdr["normalization"]["standardize_inputs"]
    assert dcr["normalization"]["standardize_inputs"]
    assert resolve_config(merge_config({}), "unknown", 0)["normalization"]["standardize_inputs"]
    assert cdr["adam"]["levels"] == [8] and cdr["adam"]["work_units_per_level"] == 600
    assert (cdr["adam"]["batch_size"], cdr["adam"]["lr"]) == (2, 1e-3)
    assert dcr["split"]["fractions"] == [0.8, 0.1, 0.1] and cdr["split"]["seed"] == 3
    with pytest.raises(ConfigError, match="expected an integer"):
        merge_config({"gnvpro": {"r_max": 2.5}})
    with pytest.raises(ConfigError, match="unknown section"):
        merge_config({"optimizer": {}})
