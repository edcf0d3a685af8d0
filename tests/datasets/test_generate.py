"""End-to-end tests of generate-dataset: ranks, kill and resume, refusals, failures."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from datasets import open_dataset
from datasets.errors import DatasetFileError
from datasets.storage import FAILED
from tests.datasets.cli_helpers import (
    COARSE,
    N_SAMPLES,
    assert_same_data,
    clean_env,
    command,
    run_cli,
)


def test_one_and_two_ranks_identical(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "two.h5"
    proc = run_cli([*COARSE, "--samples", N_SAMPLES, "--out", out], n_ranks=2)
    assert proc.returncode == 0, proc.stderr
    assert f"{N_SAMPLES} samples, {N_SAMPLES} ok, 0 failed" in proc.stdout
    assert "on 2 ranks" in proc.stdout
    assert_same_data(reference, out)
    with h5py.File(out, "r") as f:
        assert f.attrs["n_ranks"] == 2 and f.attrs["complete"]
        assert np.all(f["solve_time"][()] > 0)
        assert set(f["solver_rank"][()]) == {0, 1}  # rank 0 computes too


def test_reference_file_contents(reference: Path) -> None:
    ds = open_dataset(reference)
    assert ds.sizes == {"sample": N_SAMPLES, "parameter": 55, "observable": 72}
    assert ds.attrs["problem"] == "cdr"
    config = json.loads(ds.attrs["config"])
    assert config["solver"]["n_cells"] == 12 and config["generation"]["seed"] == 3
    for key in ("package_version", "git_commit", "dolfinx_version", "petsc_version",
                "mpi4py_version", "h5py_version", "created"):
        assert ds.attrs[key] not in ("", None)
    assert set(ds["point"].values) == set(range(6)) and ds["time"].values[-1] == 0.5
    np.testing.assert_allclose(ds["y"].sum("parameter"), 1.0, rtol=1e-12)
    assert np.all((ds["c"] > 5) & (ds["c"] < 80))
    sizes = {s: int((ds["split"] == s).sum()) for s in ("train", "validation", "test")}
    assert sizes == {"train": 20, "validation": 10, "test": 10}
    train = open_dataset(reference, split="train")
    assert train.sizes["sample"] == 20 and set(train["split"].values) == {"train"}


def _wait_for_progress(path: Path, proc: subprocess.Popen, at_least: int) -> int:
    """Poll the output file until it holds at least ``at_least`` finished samples."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert proc.poll() is None, "generation ended before it could be killed"
        try:
            with h5py.File(path, "r") as f:
                done = int(np.count_nonzero(f["status"][()] != 0))
        except (OSError, KeyError):
            done = 0
        if done >= at_least:
            return done
        time.sleep(0.02)
    raise AssertionError("no progress in the output file")


def _wait_for_lock_release(path: Path) -> None:
    """Wait until no (orphaned) process holds the output's lock file."""
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        for _ in range(200):
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.05)
    raise AssertionError("the killed job's lock is still held")


def test_kill_and_resume(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed.h5"
    args = [*COARSE, "--samples", N_SAMPLES, "--out", out]
    proc = subprocess.Popen(command(args, 2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
    try:
        _wait_for_progress(out, proc, at_least=4)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    _wait_for_lock_release(out)
    killed = open_dataset(out, include_failed=True)  # the killed job left a valid file
    n_done = int((killed["status"] == "ok").sum())
    assert 0 < n_done < N_SAMPLES and "split" not in killed and not killed.attrs["complete"]

    proc2 = run_cli(args, n_ranks=2)
    assert proc2.returncode == 0, proc2.stderr
    assert f"{N_SAMPLES - n_done} solved" in proc2.stdout
    assert_same_data(reference, out)
    runs = json.loads(open_dataset(out).attrs["runs"])
    assert [r["solved"] for r in runs] == [n_done, N_SAMPLES - n_done]
    assert not list(tmp_path.glob(".resumed.h5.tmp*"))


def test_sigterm_saves_finished_samples_and_resume_completes(tmp_path: Path) -> None:
    """A batch system's SIGTERM to every process: rank 0 saves all finished samples although
    no periodic checkpoint is due, and the same command then finishes the rest."""
    out, n = tmp_path / "term.h5", 300
    args = [*COARSE, "--samples", n, "--out", out, "--checkpoint-interval", "1000"]
    proc = subprocess.Popen(command(args, 2), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=clean_env(),
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while not out.exists() and time.monotonic() < deadline:  # the initial, all-pending file
        time.sleep(0.05)
    time.sleep(2.0)  # solving is under way
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "interrupted by signal 15" in err and "run the same command again" in err
    _wait_for_lock_release(out)
    saved = open_dataset(out, include_failed=True)
    n_done = int((saved["status"] == "ok").sum())
    assert 0 < n_done < n, n_done  # without the handler only the initial checkpoint exists
    assert set(saved["solver_rank"].values[saved["status"].values == "ok"]) == {0, 1}

    proc2 = run_cli(args, n_ranks=2)
    assert proc2.returncode == 0, proc2.stderr
    assert f"{n - n_done} solved" in proc2.stdout
    runs = json.loads(open_dataset(out).attrs["runs"])
    assert [r["solved"] for r in runs] == [n_done, n - n_done]


def test_rerun_of_complete_file_solves_nothing(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.h5"
    shutil.copy(reference, out)
    config = tmp_path / "coarse.toml"
    config.write_text("n_cells = 12\n")
    args = [a for a in COARSE if a not in ("--set", "n_cells=12")]
    proc = run_cli([*args, "--config", config, "--samples", N_SAMPLES, "--out", out])
    assert proc.returncode == 0, proc.stderr
    assert "0 solved" in proc.stdout
    assert_same_data(reference, out)


def test_mismatched_configuration_refused(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.h5"
    shutil.copy(reference, out)
    before = out.read_bytes()
    proc = run_cli([*COARSE, "--samples", N_SAMPLES, "--out", out, "--set", "n_cells=13",
                    "--set", "dt=0.005"])
    assert proc.returncode == 2
    assert proc.stderr.startswith("generate-dataset: error:")
    assert "solver.n_cells: file has 12, requested 13" in proc.stderr
    assert "solver.dt: file has 0.01, requested 0.005" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli([*COARSE, "--samples", N_SAMPLES + 1, "--out", out])
    assert proc.returncode == 2 and "generation.samples" in proc.stderr
    assert out.read_bytes() == before


def test_corrupt_output_refused(reference: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.h5"
    bad.write_bytes(reference.read_bytes()[: reference.stat().st_size // 3])
    proc = run_cli([*COARSE, "--samples", 4, "--out", bad])
    assert proc.returncode == 2
    assert str(bad) in proc.stderr and "not resuming" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(DatasetFileError, match="bad.h5"):
        open_dataset(bad)


def test_user_errors(tmp_path: Path) -> None:
    proc = run_cli([*COARSE, "--samples", 4, "--out", tmp_path / "x.h5",
                    "--ranks-per-sample", 3], n_ranks=2)
    assert proc.returncode == 2
    assert proc.stderr.count("must divide the number of MPI ranks (2)") == 1
    proc = run_cli([*COARSE, "--samples", 4, "--out", tmp_path / "x.h5",
                    "--set", "no_such_setting=1"])
    assert proc.returncode == 2 and "no_such_setting" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x.h5").exists()


def test_failed_samples_recorded_and_excluded(tmp_path: Path) -> None:
    out = tmp_path / "failing.h5"
    proc = run_cli([*COARSE, "--samples", 3, "--out", out, "--set", "newton_max_iterations=1",
                    "--set", "max_halvings=0"])
    assert proc.returncode == 0, proc.stderr
    assert "3 samples, 0 ok, 3 failed" in proc.stdout
    with h5py.File(out, "r") as f:
        assert np.all(f["status"][()] == FAILED) and np.all(f["attempts"][()] == 2)
        assert all("Newton" in r for r in f["failure_reason"].asstr()[()])
        assert all(f["splits"][k].size == 0 for k in f["splits"])
        assert np.all(np.isnan(f["c"][()]))
    assert open_dataset(out).sizes["sample"] == 0
    assert open_dataset(out, include_failed=True).sizes["sample"] == 3


def test_ranks_per_sample_two(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "grouped.h5"
    proc = run_cli([*COARSE, "--samples", 2, "--out", out, "--ranks-per-sample", 2], n_ranks=2)
    assert proc.returncode == 0, proc.stderr
    got, ref = open_dataset(out), open_dataset(reference).isel(sample=slice(0, 2))
    assert np.all(got["status"] == "ok") and got.attrs["ranks_per_sample"] == 2
    np.testing.assert_array_equal(got["y"], ref["y"])
    np.testing.assert_allclose(got["c"], ref["c"], rtol=1e-9)
