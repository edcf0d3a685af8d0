"""End-to-end tests of evaluate-surrogate on a coarse CDR problem (n_cells = 12, ~0.1 s per
solve) and a quickly trained surrogate: reported numbers against a direct computation,
refusals, kill and resume, 1 vs 2 ranks, --data mode and models without solver provenance."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.datasets.cli_helpers import OBSERVABLE_RTOL, clean_env

BIN = Path(sys.executable).parent
TRAIN_SEED = 3
FRESH_SEED = 5
N_FRESH = 20
SOLVER = {"n_cells": 12}
TINY_TRAINING = "[model]\nlevels = [2]\n[gnvpro]\nwork_units_per_level = 5\n"


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    """surrogate.evaluation.cli.main installs SIGTERM/SIGINT handlers (as generate-dataset
    does)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def _train(data: Path, out: Path, tmp: Path) -> Path:
    from train.cli import main as train_main

    config = tmp / "tiny.toml"
    config.write_text(TINY_TRAINING)
    rc = train_main(["--data", str(data), "--method", "gnvpro", "--config", str(config),
                     "--out", str(out), "--quiet", "--threads", "1"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Training data (24 samples, seed 3), a model trained on it, and a reference report
    (20 fresh samples, seed 5) from an uninterrupted 1-rank run."""
    from datasets.generate import GenerationOptions, generate
    from surrogate.evaluation import EvaluationRequest, evaluate

    tmp = tmp_path_factory.mktemp("evaluate")
    data = tmp / "train.h5"
    generate(GenerationOptions(problem="cdr", out=data, samples=24, seed=TRAIN_SEED,
                               settings=SOLVER, progress=False))
    model = _train(data, tmp / "model", tmp)
    ref = tmp / "reference"
    evaluate(EvaluationRequest(model_dir=model, out=ref, samples=N_FRESH, seed=FRESH_SEED,
                               progress=False))
    return {"tmp": tmp, "data": data, "model": model, "ref": ref}


def _report(directory: Path) -> dict:
    return json.loads((directory / "report.json").read_text())


def _numbers(report: dict) -> dict:
    """The report's error numbers (everything but timings and paths)."""
    return {"fresh": report["fresh"], "splits": report["splits"],
            "per_sample": report["per_sample"], "per_observable": report["per_observable"],
            "n_fresh": report["n_fresh"], "n_failed": report["n_failed"],
            "worst": report["worst"], "outside": report["outside_training_box"]}


def _assert_same_numbers(a: dict, b: dict) -> None:
    na, nb = _numbers(a), _numbers(b)
    flat_a, flat_b = _flatten(na), _flatten(nb)
    assert flat_a.keys() == flat_b.keys()
    for key, value in flat_a.items():
        if isinstance(value, float):
            np.testing.assert_allclose(flat_b[key], value, rtol=1e3 * OBSERVABLE_RTOL,
                                       err_msg=key)
        else:
            assert flat_b[key] == value, key


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        items = [(f"{prefix}/{k}", v) for k, v in obj.items()]
    elif isinstance(obj, list):
        items = [(f"{prefix}[{i}]", v) for i, v in enumerate(obj)]
    else:
        return {prefix: obj}
    return {k2: v2 for k, v in items for k2, v2 in _flatten(v, k).items()}


def _cli(args: list, n_ranks: int = 1) -> list[str]:
    """The command under mpiexec (run as ``python -m``: the console script's target is checked
    by :func:`test_entry_point_is_the_evaluation_cli`)."""
    return [str(BIN / "mpiexec"), "-n", str(n_ranks), sys.executable, "-m",
            "surrogate.evaluation.cli", *map(str, args)]


def _env() -> dict[str, str]:
    env = clean_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    return env


def _wait_for_lock_release(path: Path) -> None:
    """Wait until no (orphaned) process of the killed job holds the output's lock file."""
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        for _ in range(200):
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fh, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                time.sleep(0.05)
    raise AssertionError("the killed job's lock is still held")


@pytest.mark.filterwarnings("ignore::surrogate.OutOfBoxWarning")  # fresh y may leave it
def test_reported_errors_equal_direct_computation(setup) -> None:
    """Fresh, per-observable, split and box numbers of the report against numpy."""
    from datasets import open_dataset
    from surrogate import load

    report = _report(setup["ref"])
    fresh = open_dataset(setup["ref"] / "fresh.h5")
    assert fresh.sizes["sample"] == N_FRESH and int(fresh.attrs["seed"]) == FRESH_SEED
    sur = load(setup["model"])
    y, c = fresh["y"].values, fresh["c"].values
    pred = sur.predict(y)
    assert not sur.torch_model.normalizer.center_targets  # CDR: c_shift = 0
    err = np.sqrt(((pred - c) ** 2).sum(axis=1)) / np.sqrt((c ** 2).sum(axis=1))
    assert report["n_fresh"] == N_FRESH and report["n_failed"] == 0
    np.testing.assert_allclose(report["per_sample"]["error"], err, rtol=1e-12)
    expected = {"mean": err.mean(), "std": err.std(), "median": np.median(err),
                "p95": np.percentile(err, 95), "max": err.max()}
    for key, value in expected.items():
        assert report["fresh"][key] == pytest.approx(value, rel=1e-12), key
    np.testing.assert_allclose(report["per_observable"]["rmse"],
                               np.sqrt(((pred - c) ** 2).mean(axis=0)), rtol=1e-12)
    np.testing.assert_allclose(report["per_observable"]["relative"],
                               np.linalg.norm(pred - c, axis=0) / np.linalg.norm(c, axis=0),
                               rtol=1e-12)
    assert report["worst"][0]["sample"] == int(np.argmax(err))
    assert report["worst"][0]["parameters"]["r_1_2"] == y[np.argmax(err), 0]
    # splits of the training data, computed the same way
    train = open_dataset(setup["data"])
    for split in ("train", "validation", "test"):
        part = train.isel(sample=np.flatnonzero(train["split"].values == split))
        yt, ct = part["y"].values, part["c"].values
        e = np.linalg.norm(sur.predict(yt) - ct, axis=1) / np.linalg.norm(ct, axis=1)
        assert report["splits"][split]["n"] == yt.shape[0]
        assert report["splits"][split]["mean"] == pytest.approx(e.mean(), rel=1e-12)
        assert report["splits"][split]["std"] == pytest.approx(e.std(), rel=1e-12)
    # training box: the one train-surrogate records in the metadata (the training split's
    # min/max)
    ytrain = train.isel(sample=np.flatnonzero(train["split"].values == "train"))["y"].values
    lo, hi = ytrain.min(axis=0), ytrain.max(axis=0)
    box = report["outside_training_box"]
    assert box["box_source"] == "model metadata"
    assert box["n_samples_outside"] == int(((y < lo) | (y > hi)).any(axis=1).sum())
    assert box["per_parameter"]["r_1_3"]["n_below"] == int((y[:, 1] < lo[1]).sum())
    assert box["per_parameter"]["r_1_3"]["n_above"] == int((y[:, 1] > hi[1]).sum())
    # cost: median solve time of the fresh file
    assert report["cost"]["pde_seconds_per_solve"] == pytest.approx(
        float(np.median(fresh["solve_time"].values)), rel=1e-12)
    assert report["cost"]["speedup_single"] == pytest.approx(
        report["cost"]["pde_seconds_per_solve"] / report["cost"]["surrogate_seconds_single"])
    for name, rel in report["figures"].items():
        assert (setup["ref"] / rel).stat().st_size > 1000, name
    assert "| **fresh** | 20 |" in (setup["ref"] / "report.md").read_text()
    # scale-free figures (issue 18): standardised by the training split's statistics
    ctrain = train.isel(sample=np.flatnonzero(train["split"].values == "train"))["c"].values
    mu, sd = ctrain.mean(axis=0), ctrain.std(axis=0)
    sf = report["scale_free"]["fresh"]
    assert sf["relative_frobenius"] == pytest.approx(
        np.linalg.norm((pred - c) / sd) / np.linalg.norm((c - mu) / sd), rel=1e-10)
    r2 = 1 - ((pred - c) ** 2).sum(axis=0) / ((c - c.mean(axis=0)) ** 2).sum(axis=0)
    np.testing.assert_allclose(sf["r2"], r2, rtol=1e-10)
    assert set(report["scale_free"]) >= {"fresh", "train", "validation", "test"}
    assert "## Scale-free errors" in (setup["ref"] / "report.md").read_text()


def test_training_seed_refused_and_nothing_written(setup, capsys) -> None:
    from surrogate.evaluation.cli import main

    out = setup["tmp"] / "seed_refused"
    rc = main([str(setup["model"]), "--samples", "4", "--seed", str(TRAIN_SEED), "--out",
               str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("evaluate-surrogate: error: --seed 3 is the training data's seed")
    assert not out.exists()


def test_overlap_with_training_parameters_refused(setup, capsys) -> None:
    """A dataset that shares samples with the training data (here: a copy holding one training
    sample) is refused; so is a seed whose draws would repeat training parameters."""
    from datasets.storage import read_state, write_atomic
    from surrogate.evaluation.cli import main
    from surrogate.evaluation.plan import overlap

    mixed = setup["tmp"] / "mixed.h5"
    state = read_state(setup["ref"] / "fresh.h5")
    state.y[7] = read_state(setup["data"]).y[11]
    write_atomic(mixed, state)
    out = setup["tmp"] / "overlap_refused"
    rc = main([str(setup["model"]), "--data", str(mixed), "--out", str(out), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "1 of 20 evaluation samples (first: sample 7) have the same parameters" in err
    assert not out.exists()
    a = np.arange(12.0).reshape(4, 3)
    assert overlap(a, a[[2]]).tolist() == [2] and overlap(a, a + 0.5).size == 0


def test_killed_run_resumes_to_same_report(setup, capsys) -> None:
    out = setup["tmp"] / "killed"
    args = [setup["model"], "--samples", N_FRESH, "--seed", FRESH_SEED, "--out", out,
            "--no-progress", "--checkpoint-interval", "0.05"]
    proc = subprocess.Popen(_cli(args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(), start_new_session=True)
    fresh = out / "fresh.h5"
    try:
        deadline = time.monotonic() + 120
        done = 0
        while done < 3:
            assert proc.poll() is None, "the evaluation ended before it could be killed"
            assert time.monotonic() < deadline, "no progress in fresh.h5"
            try:
                with h5py.File(fresh, "r") as f:
                    done = int(np.count_nonzero(f["status"][()] != 0))
            except (OSError, KeyError):
                pass
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "report.json").exists()
    with h5py.File(fresh, "r") as f:
        n_done = int(np.count_nonzero(f["status"][()] != 0))
    assert 0 < n_done < N_FRESH
    _wait_for_lock_release(fresh)
    from surrogate.evaluation.cli import main  # the same command again, in this process

    assert main(list(map(str, args))) == 0
    with h5py.File(fresh, "r") as f:
        runs = json.loads(f.attrs["runs"])
    assert [r["solved"] for r in runs] == [n_done, N_FRESH - n_done]
    _assert_same_numbers(_report(setup["ref"]), _report(out))
    printed = capsys.readouterr().out
    assert f"fresh       {N_FRESH:>6}" in printed and "speed-up" in printed


def test_two_ranks_give_the_same_numbers(setup) -> None:
    out = setup["tmp"] / "two_ranks"
    proc = subprocess.run(_cli([setup["model"], "--samples", N_FRESH, "--seed", FRESH_SEED,
                                "--out", out, "--no-progress"], n_ranks=2),
                          capture_output=True, text=True, env=_env(), timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("evaluate-surrogate: report in") == 1  # rank 0 prints
    with h5py.File(out / "fresh.h5", "r") as f:
        assert set(f["solver_rank"][()]) == {0, 1}  # both ranks solved
    _assert_same_numbers(_report(setup["ref"]), _report(out))


def test_data_mode_on_existing_file(setup) -> None:
    from surrogate.evaluation import EvaluationRequest, evaluate

    out = setup["tmp"] / "data_mode"
    report = evaluate(EvaluationRequest(model_dir=setup["model"], out=out,
                                        data=setup["ref"] / "fresh.h5", progress=False))
    assert report["mode"] == "data" and not (out / "fresh.h5").exists()
    _assert_same_numbers(_report(setup["ref"]), _report(out))


def test_model_without_solver_provenance(setup, capsys) -> None:
    """Trained on a .npz export: a clear error, unless --data or --problem/--set is given."""
    from datasets import open_dataset
    from surrogate.evaluation.cli import main

    tmp = setup["tmp"]
    ds = open_dataset(setup["data"])
    npz = tmp / "external.npz"
    np.savez(npz, y=ds["y"].values, c=ds["c"].values, split=ds["split"].values)
    model = _train(npz, tmp / "npz_model", tmp)
    out = tmp / "npz_refused"
    rc = main([str(model), "--samples", "4", "--seed", str(FRESH_SEED), "--out", str(out)])
    assert rc == 2
    err = capsys.readouterr().err
    assert "without solver provenance" in err and "--data" in err and "--problem" in err
    assert not out.exists()

    out = tmp / "npz_data"
    assert main([str(model), "--data", str(setup["ref"] / "fresh.h5"), "--out", str(out),
                 "--no-progress"]) == 0
    assert _report(out)["n_fresh"] == N_FRESH and _report(out)["splits"]["train"]["n"] == 12

    out = tmp / "npz_problem"
    assert main([str(model), "--problem", "cdr", "--set", "n_cells=12", "--samples", "6",
                 "--seed", str(FRESH_SEED), "--out", str(out), "--no-progress"]) == 0
    with h5py.File(out / "fresh.h5", "r") as f, h5py.File(setup["ref"] / "fresh.h5") as g:
        np.testing.assert_array_equal(f["y"][()], g["y"][:6])  # same sampler, seed, settings
    # its training parameters are read from the .npz: overlap is still refused
    out = tmp / "npz_overlap"
    assert main([str(model), "--data", str(setup["data"]), "--out", str(out)]) == 2
    assert "same parameters as training-data samples" in capsys.readouterr().err


def test_import_surrogate_stays_free_of_mpi_and_dolfinx() -> None:
    """Importing the evaluation package (and its CLI module) loads no MPI, PETSc, dolfinx,
    solver module or datasets; ``solvers`` itself (its light common runtime) is allowed."""
    code = ("import sys, surrogate, surrogate.evaluation, surrogate.evaluation.cli, "
            "surrogate.evaluation.plan, surrogate.evaluation.report, "
            "surrogate.evaluation.plots\n"
            "bad = [m for m in ('mpi4py', 'dolfinx', 'petsc4py', 'solvers.cdr', 'solvers.dcr', "
            "'datasets', 'train') if m in sys.modules]\nassert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_entry_point_is_the_evaluation_cli() -> None:
    """pyproject's evaluate-surrogate script runs surrogate.evaluation.cli.main."""
    import importlib
    import tomllib

    from surrogate.evaluation.cli import main

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    target = tomllib.loads(pyproject.read_text())["project"]["scripts"]["evaluate-surrogate"]
    module, name = target.split(":")
    assert getattr(importlib.import_module(module), name) is main


def test_bad_options_are_clear_errors(setup, capsys) -> None:
    from surrogate.evaluation.cli import main

    model, out = str(setup["model"]), str(setup["tmp"] / "bad")
    cases = [([model, "--out", out, "--set", "n_cells=12", "--seed", "5"], "--set needs --problem"),
             ([model, "--out", out, "--seed", "5", "--problem", "cdr"],
              "--problem/--set are for models without solver provenance"),
             ([model, "--out", out, "--data", str(setup["data"]), "--seed", "5"],
              "--data evaluates an existing file"),
             ([model, "--out", out], "--seed is required"),
             ([model, "--out", out, "--seed", "5", "--samples", "0"], "--samples must be >= 1"),
             ([str(setup["tmp"]), "--out", out, "--seed", "5"], "not a surrogate model directory"),
             ([model, "--out", out, "--data", str(setup["ref"] / "fresh.h5"), "--device", "meta"],
              "--device 'meta': expected cpu, cuda or cuda:N")]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("evaluate-surrogate: error: ") and message in err, (argv, err)
    assert not Path(out).exists()


def test_training_box_from_metadata_inputs() -> None:
    """The box of contracts item 1 (metadata "inputs": top level as train-surrogate writes it,
    or under "training" in older files) is preferred to the training data's."""
    from surrogate.metadata import parameter_box

    inputs = {"names": ["a", "b"], "lower": [0.0, 1.0], "upper": [2.0, 3.0],
              "box": "training split min/max"}
    for meta in ({"inputs": inputs, "training": {}}, {"training": {"inputs": inputs}}):
        box = parameter_box(meta)
        assert box is not None and box.source == "model metadata"
        assert box.lower.tolist() == [0.0, 1.0] and box.upper.tolist() == [2.0, 3.0]
    assert parameter_box({"training": {}}) is None


def test_box_from_metadata_after_training_file_moved(setup) -> None:
    """The training box train-surrogate records (top-level "inputs") is reported even when the
    training file has moved away (evaluate-surrogate used to look for it under "training",
    recompute it from the training file and, with the file gone, report no box)."""
    from datasets import open_dataset
    from surrogate.evaluation.cli import main

    tmp = setup["tmp"]
    data = tmp / "moving.h5"
    shutil.copyfile(setup["data"], data)
    model = _train(data, tmp / "moving_model", tmp)
    train = open_dataset(data)
    ytrain = train.isel(sample=np.flatnonzero(train["split"].values == "train"))["y"].values
    names = [str(n) for n in train["parameter"].values]
    train.close()
    data.rename(tmp / "moved_away.h5")

    out = tmp / "moved_box"
    assert main([str(model), "--data", str(setup["ref"] / "fresh.h5"), "--out", str(out),
                 "--no-progress"]) == 0
    report = _report(out)
    assert report["splits"] == {}                      # the training file is gone ...
    box = report["outside_training_box"]               # ... but not its box
    assert box is not None and box["box_source"] == "model metadata"
    assert [box["per_parameter"][n]["lower"] for n in names] == ytrain.min(axis=0).tolist()
    assert [box["per_parameter"][n]["upper"] for n in names] == ytrain.max(axis=0).tolist()
    reference = _report(setup["ref"])["outside_training_box"]
    assert box["n_samples_outside"] == reference["n_samples_outside"]
    assert "## Training box" in (out / "report.md").read_text()


@pytest.mark.filterwarnings("ignore::surrogate.OutOfBoxWarning")  # fresh y may leave it
def test_dcr_model_with_periodic_encoding(tmp_path_factory, capsys) -> None:
    """A DCR surrogate with the default periodic encoding (4 network inputs, 3 parameters) is
    evaluated against fresh solves; its errors equal a direct computation."""
    import surrogate
    from datasets import open_dataset
    from surrogate.evaluation.cli import main
    from tests.uq_fixtures import tiny_dcr

    _, model_dir = tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["model"]["encoding"]["n_in"] == 3                 # the encoding is in use
    out = tmp_path_factory.mktemp("dcr-eval")
    assert main([str(model_dir), "--samples", "6", "--seed", "11", "--out", str(out),
                 "--no-progress"]) == 0
    report = _report(out)
    ds = open_dataset(out / "fresh.h5")
    y, c = ds["y"].values, ds["c"].values
    m = surrogate.load(model_dir)
    shift = m.torch_model.normalizer.c_shift.numpy()
    err = np.linalg.norm(m(y) - c, axis=1) / np.linalg.norm(c - shift, axis=1)
    assert report["n_fresh"] == 6
    assert report["fresh"]["mean"] == pytest.approx(err.mean(), rel=1e-10)
    assert report["fresh"]["max"] == pytest.approx(err.max(), rel=1e-10)
