"""A problem plugin in a temporary file (never installed) through the whole pipeline:
generate-dataset on 1 and 2 ranks, train-surrogate (the plugin's facts come with the data),
evaluate-surrogate with fresh solves through the plugin, serve-surrogate --pde and PDEModel;
a plugin that changed since is refused, naming the change."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import umbridge

from tests.datasets.cli_helpers import assert_same_data, clean_env, command
from tests.plugin_sources import write_plugin

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TRAIN_SEED, FRESH_SEED = 1, 9
TINY = "[model]\nwidth = 6\nlevels = [2, 4]\n[gnvpro]\nwork_units_per_level = 60\n"


def env() -> dict[str, str]:
    e = clean_env()
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    return e


def run(args: list[str], cwd: Path, n_ranks: int | None = None
        ) -> subprocess.CompletedProcess[str]:
    cmd = command(args, n_ranks) if n_ranks else [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env(), timeout=300)


def plugin_class(path: Path) -> type:
    """The Bump class, imported directly from the file (as the test's "direct computation")."""
    spec = importlib.util.spec_from_file_location("direct_bump", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Bump


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    """bump.py in a work folder; a 40-sample dataset on 1 rank; a model trained on it in a
    process that never sees the plugin file; 20 fresh solves through evaluate-surrogate."""
    work = tmp_path_factory.mktemp("own-model")
    plugin = write_plugin(work)
    gen = ["bump.py:Bump", "--samples", "40", "--seed", str(TRAIN_SEED), "--no-progress",
           "--set", "n_points=16"]
    proc = run([*gen, "--out", "one.h5"], work, n_ranks=1)
    assert proc.returncode == 0, proc.stderr
    (work / "tiny.toml").write_text(TINY)
    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not where the plugin is
    proc = run([BIN / "train-surrogate", "--data", work / "one.h5", "--method", "gnvpro",
                "--config", work / "tiny.toml", "--out", work / "model", "--quiet",
                "--threads", "1"], elsewhere)
    assert proc.returncode == 0, proc.stderr
    proc = run([sys.executable, "-m", "surrogate.evaluation.cli", work / "model", "--samples",
                "20", "--seed", str(FRESH_SEED), "--out", work / "report", "--no-progress"],
               elsewhere)
    assert proc.returncode == 0, proc.stderr
    return {"work": work, "plugin": plugin, "data": work / "one.h5", "model": work / "model",
            "report": work / "report", "gen": gen}


def test_two_ranks_make_the_same_dataset(pipeline) -> None:
    proc = run([*pipeline["gen"], "--out", "two.h5"], pipeline["work"], n_ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert "bump -> two.h5: 40 samples, 40 ok, 0 failed" in proc.stdout
    assert "on 2 ranks" in proc.stdout
    assert_same_data(pipeline["data"], pipeline["work"] / "two.h5")


def test_the_dataset_holds_the_plugins_solves(pipeline) -> None:
    from datasets import open_dataset

    ds = open_dataset(pipeline["data"])
    bump = plugin_class(pipeline["plugin"])(None, n_points=16)
    for i in (0, 17, 39):
        y = ds["y"].values[i]
        np.testing.assert_array_equal(y, bump.sample_parameters(np.random.default_rng([1, i])))
        np.testing.assert_array_equal(ds["c"].values[i], bump.solve(y, sample=i))
    np.testing.assert_array_equal(ds["x"].values, np.linspace(0, 1, 16))


def test_training_used_the_facts_recorded_with_the_data(pipeline) -> None:
    from datasets import open_dataset
    from surrogate import load

    sur = load(pipeline["model"])
    norm = sur.torch_model.normalizer
    assert norm.center_targets  # the plugin's hint (the trainer's default is False)
    train = open_dataset(pipeline["data"], split="train")
    assert train.sizes["sample"] == 20  # the plugin's default_split 50/25/25 of 40
    np.testing.assert_allclose(norm.c_shift.numpy(), train["c"].values.mean(axis=0),
                               rtol=1e-12)
    assert sur.input_names == ["centre", "width", "height"]


@pytest.mark.filterwarnings("ignore::surrogate.OutOfBoxWarning")
def test_fresh_solves_and_report_equal_a_direct_computation(pipeline) -> None:
    from datasets import open_dataset
    from surrogate import load

    report = json.loads((pipeline["report"] / "report.json").read_text())
    fresh = open_dataset(pipeline["report"] / "fresh.h5")
    assert report["problem"] == "bump" and report["mode"] == "solved"
    assert fresh.sizes["sample"] == 20 and int(fresh.attrs["seed"]) == FRESH_SEED
    bump = plugin_class(pipeline["plugin"])(None, n_points=16)
    y, c = fresh["y"].values, fresh["c"].values
    direct = np.array([bump.solve(bump.sample_parameters(np.random.default_rng([FRESH_SEED, i])),
                                  sample=i) for i in range(20)])
    np.testing.assert_array_equal(c, direct)
    sur = load(pipeline["model"])
    shift = sur.torch_model.normalizer.c_shift.numpy()
    pred = sur.predict(y)
    err = np.linalg.norm(pred - c, axis=1) / np.linalg.norm(c - shift, axis=1)
    np.testing.assert_allclose(report["per_sample"]["error"], err, rtol=1e-12)
    assert report["fresh"]["mean"] == pytest.approx(err.mean(), rel=1e-12)
    assert report["fresh"]["max"] == pytest.approx(err.max(), rel=1e-12)
    assert report["n_failed"] == 0 and report["notes"] == []
    assert 0 < err.mean() < 0.2  # a trained surrogate (predicting the mean gives 1)


def test_a_changed_plugin_is_refused_unless_allowed(pipeline, tmp_path) -> None:
    import shutil

    from surrogate.serving import PDEModel
    from surrogate.uq_model import load

    work = tmp_path / "copy"
    shutil.copytree(pipeline["work"], work)
    meta_path = work / "model" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    # the copy's model points at the copy's data (same content) and its plugin
    text = json.dumps(meta).replace(str(pipeline["work"]), str(work))
    meta_path.write_text(text)
    plugin = work / "bump.py"
    plugin.write_text(plugin.read_text() + "\n# edited after the training data was made\n")
    proc = run([sys.executable, "-m", "surrogate.evaluation.cli", work / "model", "--samples",
                "4", "--seed", "11", "--out", work / "r2", "--no-progress"], work)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("evaluate-surrogate: error: problem 'bump' "
                                                   "(plugin "), proc.stderr
    assert "is not the plugin that made the training data: the plugin file's SHA-256" \
        in lines[0] and "--allow-changed-plugin" in lines[0]
    assert not (work / "r2").exists()
    proc = run([sys.executable, "-m", "surrogate.evaluation.cli", work / "model", "--samples",
                "4", "--seed", "11", "--out", work / "r2", "--no-progress",
                "--allow-changed-plugin"], work)
    assert proc.returncode == 0, proc.stderr
    notes = json.loads((work / "r2" / "report.json").read_text())["notes"]
    assert any("the plugin file's SHA-256" in n for n in notes)
    with pytest.raises(ValueError, match="allow_changed_plugin=True"):
        PDEModel.from_surrogate_metadata(load(work / "model").metadata)
    pde = PDEModel.from_surrogate_metadata(load(work / "model").metadata,
                                           allow_changed_plugin=True)
    assert pde.plugin_changes and pde.info.name == "bump"


def test_pde_model_and_serve_surrogate_pde(pipeline) -> None:
    from surrogate import load
    from surrogate.serving import PDEModel

    sur = load(pipeline["model"])
    pde = PDEModel.from_surrogate_metadata(sur.metadata)
    bump = plugin_class(pipeline["plugin"])(None, n_points=16)
    y = np.array([[0.5, 0.4, 1.0], [0.35, 0.45, 0.7]])
    np.testing.assert_array_equal(pde(y), np.array([bump.solve(row) for row in y]))
    np.testing.assert_array_equal(pde.lower, [0.3, 0.3, 0.5])  # the declared box
    J = pde.jacobian(y[0])
    h = 1e-6
    fd = (bump.solve(y[0] + [h, 0, 0]) - bump.solve(y[0] - [h, 0, 0])) / (2 * h)
    np.testing.assert_allclose(J[:, 0], fd, rtol=1e-5, atol=1e-8)
    server = subprocess.Popen([sys.executable, "-m", "surrogate.serving",
                               str(pipeline["model"]), "--pde", "--port", "0"],
                              cwd=pipeline["work"].parent, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env())
    try:
        line = server.stdout.readline()
        assert "serving" in line, server.stderr.read()
        url = "http://127.0.0.1:" + line.split("http://127.0.0.1:")[1].split()[0]
        client = umbridge.HTTPModel(url, "pde")
        assert client.get_input_sizes() == [3] and client.get_output_sizes() == [16]
        np.testing.assert_array_equal(np.array(client([y[1].tolist()])[0]), bump.solve(y[1]))
    finally:
        server.terminate()
        server.wait(timeout=30)
