"""The inversion example's bad arguments (issue 20): one-line errors before any work (they
used to be tracebacks, several after minutes of data generation and training), and the
fingerprint check of a model left in OUT/model by a run with other settings (it used to be
reused silently)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.examples.test_dcr_inversion import load_example
from tests.uq_fixtures import tiny_dcr


@pytest.fixture(scope="module")
def example():
    return load_example()


@pytest.fixture(scope="module")
def dcr(tmp_path_factory):
    return tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")


@pytest.mark.parametrize("argv, message", [
    (["--walkers", "1"], "--walkers must be >= 6, got 1"),
    (["--true", "0.4,0.2"], "--true must have shape (3,), got shape (2,)"),
    (["--true", "nan,0.2,1.0"], "--true[0] = nan is not finite"),
    (["--true", "a,b,c"], "--true 'a,b,c'"),
    (["--steps", "0"], "--steps must be >= 2, got 0"),
    (["--steps", "5", "--burn", "5"], "--burn 5 must be smaller than --steps 5"),
    (["--noise", "inf"], "--noise must be a positive number, got inf"),
    (["--samples", "3"], "--samples must be >= 20, got 3"),
    (["--da-steps", "1"], "--da-steps must be >= 10, got 1"),
])
def test_bad_arguments_are_one_line_errors(example, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        example.main(["--tiny", "--out", str(tmp_path / "o"), *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


def test_unusable_models_and_data_are_refused_before_any_work(example, dcr, tmp_path):
    data, model = dcr
    with pytest.raises(SystemExit, match="--model .*missing.*no such file"):
        example.main(["--tiny", "--model", str(tmp_path / "missing"), "--out",
                      str(tmp_path / "o1")])
    cdr_model = tmp_path / "cdr_model"
    shutil.copytree(model, cdr_model)
    meta = json.loads((cdr_model / "metadata.json").read_text())
    meta["training"]["problem"] = "cdr"
    (cdr_model / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit, match="is of the cdr problem"):
        example.main(["--tiny", "--model", str(cdr_model), "--out", str(tmp_path / "o2")])
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()

    from datasets.generate import GenerationOptions, generate

    cdr = tmp_path / "cdr.h5"
    generate(GenerationOptions(problem="cdr", out=cdr, samples=3, seed=1,
                               settings={"n_cells": 6}, progress=False))
    with pytest.raises(SystemExit, match="--data .*cdr.h5 is of the cdr problem"):
        example.main(["--tiny", "--data", str(cdr), "--out", str(tmp_path / "o3")])
    assert not (tmp_path / "o3").exists()                             # nothing written


def test_a_model_trained_with_other_settings_is_not_reused(example, dcr, tmp_path, capsys):
    """OUT/model holds a model of another run (other work units): train-surrogate's run
    fingerprint refuses it instead of the example reusing it for the inversion."""
    data, model = dcr
    out = tmp_path / "inv"
    out.mkdir()
    shutil.copytree(model, out / "model")
    with pytest.raises(SystemExit, match="train-surrogate refused or failed"):
        example.main(["--tiny", "--data", str(data), "--out", str(out), "--work-units", "7"])
    err = capsys.readouterr().err
    assert "already holds a gnvpro model" in err and "not one of this run" in err
    assert not (out / "results.json").exists()
