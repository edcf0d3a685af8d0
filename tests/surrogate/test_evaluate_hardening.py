"""evaluate-surrogate (and generate-dataset's shared checks) under careless use (issue 20).

Everything that can be refused is refused before the first solve: nothing is written for a
tampered or missing model, an unusable device, a huge --samples or --seed, damaged
provenance, --out ''. A --data file solved with other solver settings is refused (it used
to be evaluated with a relative error of 1.0 without a word). Failed report writes, pending
samples and interruptions are reported as what they are.
"""

from __future__ import annotations

import errno
import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from surrogate.evaluation.cli import main
from tests.datasets.cli_helpers import clean_env

BIN = Path(sys.executable).parent
SOLVER = {"n_cells": 8}
TRAIN_SEED, FRESH_SEED = 3, 5


@pytest.fixture(autouse=True)
def _keep_signal_handlers():
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    """Training data (16 coarse CDR samples), a model trained on it, and 6 fresh solves."""
    from datasets.generate import GenerationOptions, generate
    from train.cli import main as train_main

    tmp = tmp_path_factory.mktemp("evaluate-hardening")
    data = tmp / "train.h5"
    generate(GenerationOptions(problem="cdr", out=data, samples=16, seed=TRAIN_SEED,
                               settings=SOLVER, progress=False))
    (tmp / "tiny.toml").write_text("[model]\nlevels = [2]\n[gnvpro]\nwork_units_per_level = 4\n")
    assert train_main(["--data", str(data), "--method", "gnvpro", "--config",
                       str(tmp / "tiny.toml"), "--out", str(tmp / "model"), "--quiet",
                       "--threads", "1"]) == 0
    fresh = tmp / "fresh.h5"
    generate(GenerationOptions(problem="cdr", out=fresh, samples=6, seed=FRESH_SEED,
                               settings=SOLVER, progress=False))
    return {"tmp": tmp, "data": data, "model": tmp / "model", "fresh": fresh}


def _copy_model(setup, name: str, edit=None) -> Path:
    target = setup["tmp"] / name
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(setup["model"], target)
    if edit is not None:
        meta = json.loads((target / "metadata.json").read_text())
        edit(meta)
        (target / "metadata.json").write_text(json.dumps(meta))
    return target


def _attrs(key, value):
    return lambda meta: meta["training"]["data"]["attrs"].__setitem__(key, value)


def test_refusals_come_before_any_solve(setup, capsys):
    """Each case exits 2 with one line naming the problem, and writes nothing."""
    tampered = _copy_model(setup, "tampered")
    w = dict(np.load(tampered / "weights.npz"))
    first = next(iter(w))
    w[first] = w[first] + 1.0
    np.savez(tampered / "weights.npz", **w)
    missing = _copy_model(setup, "no_weights")
    (missing / "weights.npz").unlink()
    cases = {
        "tampered": ([tampered], "does not match metadata.json"),
        "missing weights": ([missing], "weights file missing"),
        "negative n_samples": ([_copy_model(setup, "neg", _attrs("n_samples", -5))],
                               "training.data.attrs.n_samples must be an integer >= 1"),
        "non-integer seed": ([_copy_model(setup, "fseed", _attrs("seed", 1.5))],
                             "training.data.attrs.seed must be an integer"),
        "invalid config": ([_copy_model(setup, "cfg", _attrs("config", "{not json"))],
                           "training.data.attrs.config is not valid JSON"),
        "huge training count": ([_copy_model(setup, "huge", _attrs("n_samples", 10**15))],
                                "re-drawing the 1000000000000000 training samples"),
        "--device meta": ([setup["model"], "--device", "meta"], "expected cpu, cuda or cuda:N"),
        "--samples 1e12": ([setup["model"], "--samples", "1e12"], "--samples 1000000000000 "
                           "(55 parameters + 72 observables per sample) needs about"),
        "--seed 10^30": ([setup["model"], "--seed", str(10**30)],
                         "--seed: seed must be an integer in [0, 2^63 - 1]"),
    }
    if not torch.cuda.is_available():
        cases["--device cuda"] = ([setup["model"], "--device", "cuda"], "CUDA is not available")
    for name, (argv, message) in cases.items():
        out = setup["tmp"] / f"out_{name.replace(' ', '_')}"
        args = [str(a) for a in argv] + ["--out", str(out), "--no-progress"]
        if "--samples" not in args:
            args += ["--samples", "3"]
        if "--seed" not in args:
            args += ["--seed", str(FRESH_SEED)]
        assert main(args) == 2, name
        err = capsys.readouterr().err
        assert err.startswith("evaluate-surrogate: error: ") and message in err, (name, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (name, err)
        assert not out.exists(), name


def test_empty_out_and_a_file_as_out_are_refused(setup, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([str(setup["model"]), "--data", str(setup["fresh"]), "--out", ""]) == 2
    assert "argument --out: must be a path, got ''" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []         # nothing written into the current folder
    (tmp_path / "file").write_text("x")
    assert main([str(setup["model"]), "--data", str(setup["fresh"]), "--out",
                 str(tmp_path / "file")]) == 2
    assert "--out " in capsys.readouterr().err


def test_data_with_other_solver_settings(setup, capsys):
    from datasets.generate import GenerationOptions, generate

    other = setup["tmp"] / "other_mesh.h5"
    generate(GenerationOptions(problem="cdr", out=other, samples=4, seed=9,
                               settings={"n_cells": 10}, progress=False))
    out = setup["tmp"] / "other_refused"
    assert main([str(setup["model"]), "--data", str(other), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "was solved with other solver settings than the model's training data " \
           "(solver.n_cells)" in err
    assert "training data has 8, --data has 10" in err and "--allow-different-settings" in err
    assert not out.exists()
    out = setup["tmp"] / "other_allowed"
    assert main([str(setup["model"]), "--data", str(other), "--out", str(out), "--no-progress",
                 "--allow-different-settings"]) == 0
    notes = json.loads((out / "report.json").read_text())["notes"]
    assert any("solver.n_cells: training data has 8, --data has 10" in n for n in notes)
    assert main([str(setup["model"]), "--data", str(setup["fresh"]), "--out",
                 str(setup["tmp"] / "same"), "--no-progress"]) == 0     # same settings: fine


def test_pending_samples_are_reported(setup, capsys):
    from datasets.storage import PENDING, read_state, write_atomic

    partial = setup["tmp"] / "partial.h5"
    state = read_state(setup["fresh"])
    state.status[4:] = PENDING
    state.c[4:] = np.nan
    state.attrs["complete"] = False
    state.splits = None
    write_atomic(partial, state)
    out = setup["tmp"] / "partial_report"
    assert main([str(setup["model"]), "--data", str(partial), "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "on 4 fresh samples (0 failed solves, 2 samples pending (not solved yet)" in printed
    assert "2 samples pending in the file" in (out / "report.md").read_text()


def test_report_write_failure_is_one_line(setup, capsys, monkeypatch):
    """Disk full while writing the figures: exit 1, one line saying what is kept."""
    import surrogate.evaluation.plots as plots

    def full(path, data, what="output"):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(plots, "write_bytes_atomic", full)
    out = setup["tmp"] / "disk_full"
    assert main([str(setup["model"]), "--samples", "2", "--seed", "7", "--out", str(out),
                 "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("evaluate-surrogate: error: cannot write the report: ")
    assert "No space left on device" in err and "free some space" in err
    assert "fresh.h5 are kept" in err and "Traceback" not in err
    assert (out / "fresh.h5").is_file() and not (out / "report.json").exists()


def test_complete_fresh_file_is_not_written_again(setup, monkeypatch, capsys):
    """A second run over a complete fresh.h5 solves and writes nothing, so a full disk does
    not stop it (it used to be refused for space it did not need)."""
    import datasets.generate as generate_module

    out = setup["tmp"] / "twice"
    args = [str(setup["model"]), "--samples", "3", "--seed", "7", "--out", str(out),
            "--no-progress"]
    assert main(args) == 0
    before = (out / "fresh.h5").stat().st_mtime_ns
    usage = shutil.disk_usage(out)
    monkeypatch.setattr(generate_module.shutil, "disk_usage",
                        lambda p: usage._replace(free=1024))
    assert main(args) == 0
    assert (out / "fresh.h5").stat().st_mtime_ns == before
    other = args[:-2] + [str(setup["tmp"] / "full_disk"), "--no-progress"]
    assert main(other) == 2                                      # a new file: checked
    assert "only 1 KiB is free" in capsys.readouterr().err


def test_lock_held_by_another_run_is_named(setup, capsys):
    out = setup["tmp"] / "locked"
    out.mkdir()
    with open(out / "fresh.h5.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([str(setup["model"]), "--samples", "2", "--seed", "7", "--out", str(out),
                     "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "another running job is writing this file" in err
    assert "generate-dataset or evaluate-surrogate" in err


def test_interrupted_message_says_what_was_saved(tmp_path):
    from surrogate.evaluation.cli import interrupted_text

    assert interrupted_text(tmp_path / "fresh.h5") == (
        f"nothing was saved yet ({tmp_path / 'fresh.h5'} was not written)")
    (tmp_path / "fresh.h5").write_text("")
    assert "finished solves are saved in" in interrupted_text(tmp_path / "fresh.h5")


def test_generate_dataset_refuses_a_huge_seed(tmp_path):
    proc = subprocess.run([str(BIN / "generate-dataset"), "cdr", "--samples", "2", "--seed",
                           str(10**30), "--out", str(tmp_path / "d.h5"), "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == ("generate-dataset: error: seed must be an integer in "
                           "[0, 2^63 - 1], got 1000000000000000000000000000000\n")
    assert not (tmp_path / "d.h5").exists()


def test_small_file_size_limit_is_one_line_under_mpi(setup, tmp_path):
    """``ulimit -f 100``: MPI cannot create its shared-memory files; one line, exit 1, no
    MPICH error stack (it used to abort in MPI_Init on every rank)."""
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, resource.RLIM_INFINITY))

    env = clean_env()
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([str(BIN / "mpiexec"), "-n", "2", sys.executable, "-m",
                           "surrogate.evaluation.cli", str(setup["model"]), "--data",
                           str(setup["fresh"]), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120, env=env,
                          preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("evaluate-surrogate: error: a file-size limit of 100 KiB") == 1
    assert "Abort" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
