"""Hardening of the datasets and ``generate-dataset`` (issue 11): checksummed files, safe
temporary files, sanity-checked foreign files, a full disk, size guards, config files."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dolfinx_solver  # noqa: F401
import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.io import savemat

from datasets import open_dataset
from datasets.config import resolve_overrides
from datasets.errors import ConfigError, DatasetFileError
from datasets.generate import GenerationOptions, check_sizes
from datasets.storage import DatasetState, read_state, remove_stale_temporaries, write_atomic
from solvers.common.cli import whole_number as sample_count
from solvers.dcr import DCRSolver
from tests.datasets.cli_helpers import COARSE, clean_env, command, run_cli

ERROR_2 = "generate-dataset: error:"


def small_state(n: int = 6) -> DatasetState:
    """A real dataset state of n samples (3 parameters, 4 observables), some solved."""
    rng = np.random.default_rng(5)
    attrs = {"problem": "dcr", "config": '{"problem": "dcr"}', "seed": 1, "n_samples": n,
             "package_version": "0", "git_commit": "x", "dolfinx_version": "0",
             "petsc_version": "0", "mpi4py_version": "0", "mpi_library": "m",
             "h5py_version": "0", "hdf5_version": "0", "numpy_version": "0", "created": "t",
             "updated": "t", "n_ranks": 1, "ranks_per_sample": 1, "complete": False,
             "runs": "[]"}
    state = DatasetState.empty(attrs, ["a", "b", "d"], rng.random((n, 3)), 4,
                               {"direction": np.array([1, 1, 2, 2]),
                                "label": np.array(["p", "q", "r", "s"])})
    state.c[: n // 2] = rng.random((n // 2, 4))
    state.status[: n // 2] = 1
    state.failure_reason[n // 2] = "diverged"
    state.status[n // 2] = 2
    return state


def flip_byte(path: Path, dataset: str, offset: int = 5) -> None:
    """Flip one byte inside the stored data of ``dataset`` (first chunk)."""
    with h5py.File(path, "r") as f:
        dset = f[dataset]
        assert dset.fletcher32, f"{dataset} has no checksum"
        start = dset.id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(start + offset)
        byte = fh.read(1)
        fh.seek(start + offset)
        fh.write(bytes([byte[0] ^ 0x5A]))


# ---------------------------------------------------------------------- checksums
@pytest.mark.parametrize("dataset", ["c", "y", "status", "splits/train"])
def test_flipped_bytes_are_detected_on_open(reference, tmp_path, dataset):
    path = tmp_path / "d.h5"
    shutil.copy(reference, path)
    flip_byte(path, dataset)
    with pytest.raises(DatasetFileError, match=rf"dataset /{dataset} cannot be read "
                                               r"\(Fletcher-32 checksum failed"):
        open_dataset(path)


def test_flipped_bytes_in_c_are_detected_on_resume(reference, tmp_path):
    path = tmp_path / "d.h5"
    shutil.copy(reference, path)
    flip_byte(path, "c", 100)
    proc = run_cli([*COARSE, "--samples", "40", "--out", path])
    assert proc.returncode == 2, proc.stderr
    assert f"{ERROR_2} {path}: dataset /c cannot be read (Fletcher-32" in proc.stderr
    assert "Traceback" not in proc.stderr and "0 solved" not in proc.stdout


def test_attributes_and_strings_are_covered_by_the_content_hash(tmp_path):
    path = tmp_path / "d.h5"
    write_atomic(path, small_state())
    assert read_state(path).failure_reason[3] == "diverged"
    with h5py.File(path, "r+") as f:
        f["failure_reason"][3] = "ok-looking"
    with pytest.raises(DatasetFileError, match="checksum mismatch in the attributes or string"):
        read_state(path)
    write_atomic(path, small_state())
    with h5py.File(path, "r+") as f:
        f.attrs["seed"] = 2
    with pytest.raises(DatasetFileError, match="checksum mismatch"):
        open_dataset(path)


def _data_ranges(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of the stored bytes of the numeric datasets y, c, status, solve_time."""
    out = []
    with h5py.File(path, "r") as f:
        for name in ("y", "c", "status", "solve_time"):
            dset = f[name]
            offset = dset.id.get_offset()
            if offset is None:
                offset = dset.id.get_chunk_info(0).byte_offset
            out.append((offset, dset.id.get_storage_size()))
    return out


@given(st.integers(0, 10**9), st.integers(1, 255), st.booleans())
@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_reader_never_returns_changed_data(tmp_path, position, mask, in_data):
    """One damaged byte anywhere in a file (half of the cases inside the numeric data): the
    reader returns the original numbers or raises DatasetFileError, never another exception
    and never changed numbers."""
    path = tmp_path / "d.h5"
    state = small_state()
    write_atomic(path, state)
    data = bytearray(path.read_bytes())
    if in_data:
        ranges = _data_ranges(path)
        offset, size = ranges[position % len(ranges)]
        position = offset + (position // len(ranges)) % size
    data[position % len(data)] ^= mask
    path.write_bytes(bytes(data))
    try:
        ds = open_dataset(path, include_failed=True)
    except DatasetFileError:
        return
    np.testing.assert_array_equal(ds["y"].values, state.y)
    np.testing.assert_array_equal(ds["c"].values, state.c)
    assert list(ds["failure_reason"].values) == list(state.failure_reason)


@given(st.binary(max_size=400), st.sampled_from([".h5", ".npz", ".mat"]))
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_reader_on_arbitrary_bytes(tmp_path, content, suffix):
    path = tmp_path / f"x{suffix}"
    path.write_bytes(content)
    with pytest.raises(DatasetFileError):
        open_dataset(path)


# ---------------------------------------------------------------------- temporary files
def test_planted_symlink_at_the_old_temporary_name_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    path = tmp_path / "d.h5"
    (tmp_path / f".d.h5.tmp{os.getpid()}").symlink_to(victim)  # the old predictable name
    write_atomic(path, small_state())
    assert victim.read_text() == "precious"
    assert read_state(path).y.shape == (6, 3) and not path.is_symlink()


def test_stale_temporaries_are_removed_without_following_links(tmp_path):
    path = tmp_path / "d.h5"
    keep = tmp_path / "keep.txt"
    keep.write_text("x")
    stale = [tmp_path / ".d.h5.a1b2c3.tmp", tmp_path / ".d.h5.tmp4242"]
    for p in stale:
        p.write_text("junk")
    (tmp_path / ".d.h5.zz.tmp").symlink_to(keep)
    others = [tmp_path / ".d.h5.lock", tmp_path / ".d.h5x.tmp", tmp_path / ".e.h5.q.tmp"]
    for p in others:
        p.write_text("")
    remove_stale_temporaries(path)
    assert not any(p.exists() for p in stale) and not (tmp_path / ".d.h5.zz.tmp").is_symlink()
    assert keep.read_text() == "x" and all(p.exists() for p in others)


# ---------------------------------------------------------------------- foreign files
def test_foreign_values_are_sanity_checked(tmp_path):
    y, c = np.random.default_rng(0).random((5, 3)), np.random.default_rng(1).random((5, 882))
    np.savez(tmp_path / "ok.npz", y=y, c=c)
    np.testing.assert_array_equal(open_dataset(tmp_path / "ok.npz")["c"].values, c)
    bad = y.copy()
    bad[2, 1] = 1e183
    savemat(tmp_path / "big.mat", {"Y": bad.T, "C": c.T})
    with pytest.raises(DatasetFileError, match=r"'Y' holds 1 value\(s\) of magnitude above "
                                               r"1e\+100 \(first Y\[1, 2\] = 1e\+183\)"):
        open_dataset(tmp_path / "big.mat")
    nan = c.copy()
    nan[4, 7] = np.nan
    np.savez(tmp_path / "nan.npz", y=y, c=nan)
    with pytest.raises(DatasetFileError, match=r"'c' holds 1 non-finite value\(s\) \(first "
                                               r"c\[4, 7\] = nan\)"):
        open_dataset(tmp_path / "nan.npz")


def test_damaged_mat_file_is_refused(tmp_path):
    y, c = np.random.default_rng(0).random((50, 3)), np.random.default_rng(1).random((50, 882))
    savemat(tmp_path / "d.mat", {"Y": y.T, "C": c.T})
    data = bytearray((tmp_path / "d.mat").read_bytes())
    start = len(data) - 8 * c.size  # inside the last variable's doubles
    rng = np.random.default_rng(2)
    for k in rng.integers(start, len(data), 300):
        data[k] = int(rng.integers(0, 256))
    (tmp_path / "d.mat").write_bytes(bytes(data))
    with pytest.raises(DatasetFileError, match="damaged|cannot be read"):
        open_dataset(tmp_path / "d.mat")


# ---------------------------------------------------------------------- config and sizes
def test_config_file_problems(tmp_path):
    config = tmp_path / "c.toml"
    config.write_bytes(b"n_cells = 12\n# \xff\n")
    proc = run_cli([*COARSE, "--samples", "2", "--config", config, "--out",
                    tmp_path / "new" / "d.h5"])
    assert proc.returncode == 2, proc.stderr
    assert f"{ERROR_2} config file {config} is not UTF-8 text (byte 15" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match=f"config file {tmp_path} is a directory"):
        resolve_overrides(tmp_path, [])
    config.write_bytes(b"n_cells = [")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        resolve_overrides(config, [])


@given(st.binary(max_size=120))
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_toml_config(tmp_path, content):
    """Arbitrary bytes as --config: a dict of settings or ConfigError."""
    config = tmp_path / "c.toml"
    config.write_bytes(content)
    try:
        settings_ = resolve_overrides(config, ["n_cells=3"])
    except ConfigError:
        return
    assert isinstance(settings_, dict) and settings_["n_cells"] == 3


def test_sample_count_is_checked_up_front(tmp_path):
    proc = run_cli(["dcr", "--set", "n_cells=[12,12,6]", "--samples", "1e12", "--no-progress",
                    "--out", tmp_path / "d.h5"], timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert re.search(r"--samples 1000000000000 \(3 parameters \+ 882 observables per "
                     r"sample\) needs about [\d.]+ PiB, but only", proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []
    solver = DCRSolver(n_cells=(12, 12, 6))
    with pytest.raises(ConfigError, match=r"--samples 10000000 .* needs about 19\d GiB"):
        check_sizes(GenerationOptions("dcr", tmp_path / "d.h5", 10**7), solver)
    check_sizes(GenerationOptions("dcr", tmp_path / "d.h5", 1000), solver)  # fits
    assert sample_count("1e4") == 10000 and sample_count("12") == 12
    for text in ("2.5", "nan", "1e400", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number"):
            sample_count(text)


def test_sigterm_while_drawing_says_nothing_was_saved(tmp_path):
    """A large job interrupted before its first checkpoint must not claim a saved file."""
    out = tmp_path / "d.h5"
    proc = subprocess.Popen(command(["cdr", "--set", "n_cells=4", "--samples", "1500000",
                                     "--out", out]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    seen, deadline = "", time.monotonic() + 60
    os.set_blocking(proc.stderr.fileno(), False)
    while "drawing parameters" not in seen:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"no progress of the parameter drawing within 60 s: {seen!r}")
        try:
            seen += os.read(proc.stderr.fileno(), 65536).decode(errors="replace")
        except BlockingIOError:
            time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert "interrupted by signal 15 (SIGTERM); nothing was saved yet" in err, err
    assert "finished samples are saved" not in err and not out.exists()


# ---------------------------------------------------------------------- full disk
CHECK = ("import sys; from datasets.storage import read_state; s = read_state(sys.argv[1]); "
         "print('READ', s.y.shape[0], int((s.status == 1).sum()))")


def in_small_tmpfs(disk: Path, size: str, args: list, out: Path
                   ) -> tuple[subprocess.CompletedProcess[str], list[str], str]:
    """Run generate-dataset with ``disk`` a private tmpfs of ``size`` (user namespace); return
    the process, the files left on the tmpfs and the result of reading ``out`` there."""
    script = ('mount -t tmpfs -o size="$1" tmpfs "$2" || exit 99; d="$2"; o="$3"; shift 3; '
              '"$@"; rc=$?; echo ===; find "$d" -mindepth 1 | sort; echo ===; '
              f'[ -e "$o" ] && {sys.executable} -c "{CHECK}" "$o"; exit $rc')
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", size, str(disk),
                           str(out), *command(args)], capture_output=True, text=True,
                          timeout=180, env=clean_env())
    _, files, check = (proc.stdout.split("===\n") + ["", ""])[:3]
    return proc, files.split(), check.strip()


def _have_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


needs_tmpfs = pytest.mark.skipif(not _have_unshare(), reason="needs unshare -rm (user "
                                 "namespaces) to mount a small tmpfs")


@needs_tmpfs
def test_disk_full_keeps_the_previous_file(tmp_path):
    """The second checkpoint needs room for the old file and the new one: it fails, with a
    clear message and exit status 1; the previous file is intact and no temporary is left."""
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "d.h5"
    proc, files, check = in_small_tmpfs(disk, "400k", [
        "cdr", "--set", "n_cells=6", "--samples", "200", "--no-progress",
        "--checkpoint-interval", "0", "--out", out], out)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"{ERROR_2} {out}: cannot write the dataset: the disk "
                                  "is full"), proc.stderr
    assert "the previous version of the file is intact" in proc.stderr
    assert "Traceback" not in proc.stderr and "PETSC ERROR" not in proc.stderr
    assert files == [str(out), f"{out}.lock"]
    assert check.startswith("READ 200 "), check


@needs_tmpfs
@pytest.mark.parametrize("size, status, message", [
    ("220k", 1, "cannot write the dataset: the disk is full .* no file was written"),
    ("64k", 2, r"the dataset file needs about 202 KiB, but only 64 KiB is free"),  # up front
])
def test_disk_full_at_the_start_leaves_nothing(tmp_path, size, status, message):
    disk = tmp_path / "disk"
    disk.mkdir()
    out = disk / "new" / "d.h5"
    proc, files, check = in_small_tmpfs(disk, size, [
        "cdr", "--set", "n_cells=6", "--samples", "200", "--no-progress", "--out", out], out)
    assert proc.returncode == status, proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert "Traceback" not in proc.stderr
    assert files == [] and check == ""


def test_out_symlink_writes_the_target(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link.h5"
    link.symlink_to(real / "d.h5")
    proc = run_cli([*COARSE, "--samples", "3", "--out", link])
    assert proc.returncode == 0, proc.stderr
    assert link.is_symlink() and (real / "d.h5").is_file()
    assert open_dataset(link)["c"].shape == (3, 72)
    os.mkfifo(tmp_path / "fifo.h5")
    proc = run_cli([*COARSE, "--samples", "3", "--out", tmp_path / "fifo.h5"])
    assert proc.returncode == 2 and "is a FIFO; refusing to replace it" in proc.stderr

