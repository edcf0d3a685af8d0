"""Issue 20 (shared runtime): every entry point that initialises MPI keeps it on loopback
(``init_mpi``), MPI refuses to start under a file-size limit it cannot work with, parameter
files from pipes and devices, empty output paths, and the output-path messages."""

from __future__ import annotations

import argparse
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import solvers.common.mpi_network as mpi_network
from solvers.cli import read_parameters
from solvers.common.atomic import resolve_output
from solvers.errors import OutputPathError, UsageError
from tests.datasets.cli_helpers import clean_env
from tests.solvers.test_hardening import LOOPBACK, listening_sockets
from tests.uq_fixtures import tiny_dcr

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dcr(tmp_path_factory):
    return tiny_dcr(tmp_path_factory.getbasetemp() / "uq-dcr")


def _env() -> dict[str, str]:
    """The environment of the entry points, without the loopback settings that this test
    process (or an earlier test in it) may have set: each entry point must set them itself."""
    env = {k: v for k, v in clean_env().items()
           if k not in mpi_network.LOOPBACK_DEFAULTS and k != mpi_network.SWITCH}
    env["PYTHONPATH"] = str(ROOT)
    return env


PDE_MODEL = ("from surrogate.serving import PDEModel\n"
             "m = PDEModel('cdr', {'n_cells': 8})\n"
             "print('ready', flush=True)\n"
             "import time; time.sleep(60)\n")


def _entry_point(name: str, dcr: tuple[Path, Path], tmp: Path) -> list[str]:
    data, model = dcr
    if name == "PDEModel":
        return [sys.executable, "-c", PDE_MODEL]
    if name == "serve-surrogate --pde":
        return [sys.executable, "-m", "surrogate.serving", str(model), "--pde", "--port", "0"]
    if name == "inversion example":
        return [sys.executable, str(ROOT / "examples" / "dcr_bayesian_inversion.py"), "--tiny",
                "--model", str(model), "--out", str(tmp / "inv"), "--steps", "400",
                "--burn", "1"]
    return [sys.executable, "-m", "surrogate.evaluation.cli", str(model), "--samples", "40",
            "--seed", "11", "--out", str(tmp / "eval"), "--no-progress"]


@pytest.mark.skipif(not Path("/proc/self/net/tcp").exists(), reason="needs /proc/<pid>/net")
@pytest.mark.parametrize("name", ["PDEModel", "serve-surrogate --pde", "inversion example",
                                  "evaluate-surrogate"])
def test_every_entry_point_keeps_mpi_on_loopback(name, dcr, tmp_path):
    """While the entry point runs with MPI initialised, every TCP socket it listens on is
    bound to loopback (PDEModel(...), serve-surrogate --pde and the example used to listen on
    the external interface too)."""
    proc = subprocess.Popen(_entry_point(name, dcr, tmp_path), cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 120
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= listening_sockets(proc.pid)
            # MPI's sockets (UCX: one per interface) plus, for the server, its HTTP port
            if len(seen) >= (2 if name == "serve-surrogate --pde" else 1) and \
                    "mpi4py.MPI" in _modules(proc.pid):
                time.sleep(0.5)
                seen |= listening_sockets(proc.pid)
                break
            time.sleep(0.1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    assert seen, f"no listening socket observed (the check would be vacuous): {err[-2000:]}"
    assert {address for address, _ in seen} <= LOOPBACK, seen


def _modules(pid: int) -> str:
    """The shared libraries the process has mapped (libmpi once MPI is loaded)."""
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""
    return "mpi4py.MPI" if "libmpi" in maps and "libucp" in maps else ""


def test_mpi_refuses_to_start_under_a_small_file_size_limit(monkeypatch):
    from solvers.errors import MPIStartError

    monkeypatch.setattr(resource, "getrlimit", lambda what: (100 * 1024, 100 * 1024))
    with pytest.raises(MPIStartError, match=r"file-size limit of 100 KiB is set \(ulimit -f 100\)"):
        mpi_network.check_file_size_limit()
    monkeypatch.setattr(resource, "getrlimit",
                        lambda what: (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    mpi_network.check_file_size_limit()


@pytest.mark.parametrize("command", [["solve-pde", "cdr", "--out", "c.npy"],
                                     ["generate-dataset", "cdr", "--samples", "2", "--out",
                                      "d.h5"]])
def test_commands_say_so_in_one_line(command, tmp_path):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (100 * 1024, resource.RLIM_INFINITY))

    proc = subprocess.run([str(Path(sys.executable).parent / command[0]), *command[1:]],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=_env(), preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith(f"{command[0]}: error: a file-size limit of 100 KiB")
    assert proc.stderr.count("\n") == 1 and "Abort" not in proc.stderr


def test_parameters_from_pipes_and_devices(tmp_path):
    """``--params /dev/null`` and ``--params <(...)`` used to be "does not exist"."""
    with pytest.raises(UsageError, match="'/dev/null' is empty"):
        read_parameters("/dev/null")
    for payload in (b"0.3\n0.2\n1.0\n", _npy_bytes(np.array([0.3, 0.2, 1.0]))):
        r, w = os.pipe()
        os.write(w, payload)
        os.close(w)
        try:
            np.testing.assert_array_equal(read_parameters(f"/dev/fd/{r}"), [0.3, 0.2, 1.0])
        finally:
            os.close(r)
    r, w = os.pipe()
    os.write(w, b"0.3\nx\n")
    os.close(w)
    with pytest.raises(UsageError, match=f"cannot read parameters from '/dev/fd/{r}'"):
        read_parameters(f"/dev/fd/{r}")
    os.close(r)
    with pytest.raises(UsageError, match="does not exist"):
        read_parameters(str(tmp_path / "missing.txt"))


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def test_output_path_messages(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    for given in ("folder", "folder/", "./folder", str(tmp_path / "folder")):
        with pytest.raises(OutputPathError) as info:
            resolve_output(given, "--out")
        assert "link" not in str(info.value) and "is a folder" in str(info.value), given
    (tmp_path / "link").symlink_to("folder")
    with pytest.raises(OutputPathError, match="the target of the link"):
        resolve_output("link", "--out")
    from solvers.common.cli import path_argument

    with pytest.raises(argparse.ArgumentTypeError, match="must be a path, got ''"):
        path_argument("")
    with pytest.raises(argparse.ArgumentTypeError):
        path_argument("  ")
    assert path_argument("a/b") == Path("a/b")
