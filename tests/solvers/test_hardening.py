"""Hardening of the solvers and ``solve-pde`` (issue 11): every bad setting or file gives a
clear error naming it, absurd sizes are refused up front, outputs are written safely, Ctrl-C
ends cleanly, errors under MPI are reported once and MPI listens on loopback only."""

from __future__ import annotations

import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import dolfinx_solver  # noqa: F401  (before mpi4py/petsc4py)
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

import solvers.base
import solvers.errors
from solvers.cdr import DEFAULTS as CDR_DEFAULTS
from solvers.cdr import CDRSolver
from solvers.cdr_settings import CDRSettings
from solvers.cli import main, read_parameters
from solvers.common.mpi_network import configure_mpi_network, single_node
from solvers.common.toml import parse_assignment, read_toml
from solvers.dcr import DCRSolver
from solvers.dcr_settings import DCRSettings
from solvers.errors import ConfigError, SolveError, SolverSettingsError, UsageError

BIN = Path(sys.executable).parent
DCR_COARSE = ["--set", "n_cells=[12, 12, 6]"]
CDR_COARSE = ["--set", "n_cells=12"]
Y_DCR = [0.5, 0.2, 1.0]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without an MPI launcher's variables."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_", "MPI_LOCAL",
                                "UCX_", "FI_"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    env.update(extra)
    return env


def cli_error(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run solve-pde in-process, expect exit status 2 and return the message."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "c.npy")])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert err.startswith("solve-pde: error:") and "Traceback" not in err
    assert err.count("\n") == 1, err
    assert not (tmp_path / "c.npy").exists()
    return err


# ---------------------------------------------------------------------- settings
@pytest.mark.parametrize("argv, message", [
    (["dcr", "--set", "contrast=1000"], r"contrast = 1000 is refused.*at most 34\.5"),
    (["dcr", "--set", "contrast=nan"], r"contrast = nan is refused"),
    (["dcr", "--set", "foo=1"], r"unknown DCR setting\(s\) \['foo'\]"),
    (["dcr", "--set", "body_center=1"], r"body_center must be a list of 2 numbers, got 1"),
    (["dcr", "--set", "n_cells=[1200, 1200, 1200]"],
     r"n_cells = \[1200, 1200, 1200\] \(1\.73e\+09 nodes\).*needs about 1\.4\d TiB"),
    (["dcr", "--set", "n_receivers=100000", "--set", "receiver_spacing=1e-6"],
     r"n_receivers = 100000 \(2e\+10 observables.*needs about \d+(\.\d+)? TiB"),
    (["dcr", "--set", "receiver_start=nan"], r"receiver_start must be a finite number"),
    (["dcr", "--set", "factor_levels=[1]"], r"factor_levels must be an integer in \[0, 20\]"),
    (["dcr", "--set", "max_iterations=1e12"], r"max_iterations must be an integer in"),
    (["dcr", "--set", "allow_extrapolation=\"no\""], r"allow_extrapolation must be true or"),
    (["cdr", "--set", "velocity=3"], r"velocity must be a list of 3 numbers, got 3"),
    (["cdr", "--set", "sources=1"], r"sources must be a list of tables"),
    (["cdr", "--set", "sources=[{amplitude=1, offset=1, modulation=0, function=\"sin\", "
             "frequency=1, center=1}]"], r"sources\[0\]\.center must be a list of 2 numbers"),
    (["cdr", "--set", "reaction_field=1"], r"reaction_field must be a list of 3 numbers"),
    (["cdr", "--set", "n_levels=1000"], r"n_levels = 1000 .* overflow float64"),
    (["cdr", "--set", "reaction_table_step=1e-9"],
     r"reaction_table_step = 1e-09 .*6\.5e\+11 table points.*needs about \d+ TiB"),
    (["cdr", "--set", "n_cells=100000"], r"n_cells = 100000 \(1e\+10 nodes\).*needs about"),
    (["cdr", "--set", "level_start=nan"], r"level_start must be a finite number, got nan"),
    (["cdr", "--set", "reaction_table_range=[0, inf]"],
     r"reaction_table_range\[1\] must be a finite number"),
    (["cdr", "--set", "max_halvings=1000"], r"max_halvings must be an integer in \[0, 40\]"),
    (["cdr", "--set", "dt=1e-12"], r"5e\+11 time steps; at most"),
    (["cdr", "--set", "predictor=2"], r"predictor must be true or false, got 2"),
    (["cdr", "--set", "quadrature_degree=100"], r"quadrature_degree must be an integer in"),
    (["cdr", "--set", "newton_rtol=nan"], r"newton_rtol must be finite and > 0"),
    (["cdr", "--set", "points=[[0.5, \"a\"]]"], r"points must be a list of numbers"),
    (["cdr", "--set", "final_time=inf"], r"final_time must be finite and > 0"),
])
def test_bad_setting_is_refused_before_the_solve(tmp_path, capsys, argv, message):
    err = cli_error(tmp_path, capsys, argv)
    assert re.search(message, err), err


def test_contrast_limit_is_the_conductivity_ratio():
    """|contrast| <= ln(1e15) is accepted and solves; just above is refused."""
    limit = math.log(1e15)
    solver = DCRSolver(n_cells=(12, 12, 6), contrast=-limit)
    m = solver.conductivity(Y_DCR)
    assert 1e-15 <= m.min() < 1e-8 and m.max() <= 1.0
    c = solver.solve(Y_DCR)
    assert np.all(np.isfinite(c)) and np.abs(c).max() > 0
    with pytest.raises(SolverSettingsError, match="contrast"):
        DCRSolver(n_cells=(12, 12, 6), contrast=limit * 1.001)


def test_non_finite_operator_is_a_solve_error_not_a_hang():
    """Conductivities whose edge sums overflow never reach the Krylov solver."""
    solver = DCRSolver(n_cells=(12, 12, 6))
    m = np.ones(solver.n_cells)
    m[5:7, 5:7, 3] = 1e308  # finite, but the edge sums overflow
    t0 = time.perf_counter()
    with pytest.raises(SolveError, match="non-finite entries"):
        solver.solve_potential(m)
    assert time.perf_counter() - t0 < 5


def test_cg_iteration_cap_is_a_solve_error():
    solver = DCRSolver(n_cells=(12, 12, 6), max_iterations=2)
    with pytest.raises(SolveError, match=r"DIVERGED_MAX_IT .* after 2 iterations"):
        solver.solve(Y_DCR)


# ---------------------------------------------------------------------- parameter files
def test_parameter_file_problems_are_named(tmp_path):
    cases = {
        "empty.npy": (b"", "is empty"),
        "empty.txt": (b"", "is empty"),
        "latin1.txt": ("0.5\n0.25\n\xe9\n".encode("latin-1"), "not UTF-8"),
        "broken.npy": (b"\x93NUMPY\x01\x00", "cannot read parameters"),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UsageError, match=message):
            read_parameters(str(tmp_path / name))
    np.save(tmp_path / "complex.npy", np.array([0.5 + 1j, 0.2, 1.0]))
    with pytest.raises(UsageError, match="complex values"):
        read_parameters(str(tmp_path / "complex.npy"))
    np.save(tmp_path / "none.npy", np.zeros(0))
    with pytest.raises(UsageError, match="holds no numbers"):
        read_parameters(str(tmp_path / "none.npy"))
    with pytest.raises(UsageError, match="is a folder"):
        read_parameters(str(tmp_path))


@given(st.binary(max_size=200), st.sampled_from([".npy", ".txt"]))
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_parameter_reader(tmp_path, content, suffix):
    """Arbitrary file content gives a float vector or CLIError, never another exception."""
    path = tmp_path / f"y{suffix}"
    path.write_bytes(content)
    try:
        y = read_parameters(str(path))
    except UsageError:
        return
    assert y.dtype == np.float64 and y.ndim == 1 and y.size >= 1


def test_parameter_reader_npy_dtypes(tmp_path):
    """Every numpy dtype kind: real numbers are read exactly, the others are refused."""
    for arr in (np.array([1, 2, 3], dtype=np.int8), np.array([0.5, 0.25]),
                np.array([True, False]), np.array(["a", "b"]), np.array([1 + 2j]),
                np.zeros((2, 2)), np.array(3.0)):
        np.save(tmp_path / "a.npy", arr)
        try:
            y = read_parameters(str(tmp_path / "a.npy"))
        except UsageError:
            assert arr.dtype.kind not in "iuf" or arr.ndim != 1
        else:
            np.testing.assert_array_equal(y, arr.astype(np.float64))


# ---------------------------------------------------------------------- --set and --config
@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None, derandomize=True)
def test_property_set_parser(text):
    """Arbitrary --set text gives (key, TOML value) or ConfigError."""
    try:
        key, value = parse_assignment(text)
    except ConfigError:
        return
    assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key) and text.strip().startswith(key)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True),
                       st.one_of(st.integers(), st.floats(), st.booleans(),
                                 st.text(st.characters(blacklist_categories=("Cs", "Cc")),
                                         max_size=5),
                                 st.lists(st.integers(), max_size=3)),
                       max_size=4))
@settings(max_examples=100, deadline=None, derandomize=True)
def test_property_set_parser_round_trip(values):
    """``key=<TOML literal>`` parses back to the value (NaN compared as NaN)."""
    import json

    for key, value in values.items():
        if isinstance(value, float):
            literal = "nan" if value != value else ("inf" if value == math.inf else
                                                    "-inf" if value == -math.inf else repr(value))
        elif isinstance(value, bool):
            literal = "true" if value else "false"
        else:
            literal = json.dumps(value, ensure_ascii=False)
        k, parsed = parse_assignment(f"{key}={literal}")
        assert k == key
        if isinstance(value, float) and value != value:
            assert parsed != parsed
        else:
            assert parsed == value


@given(st.binary(max_size=120))
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_property_settings_file(tmp_path, content):
    """Arbitrary bytes as a --config file give a dict or ConfigError."""
    path = tmp_path / "c.toml"
    path.write_bytes(content)
    try:
        assert isinstance(read_toml(path), dict)
    except ConfigError:
        pass


def test_config_file_not_utf8_or_folder(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(b"n_cells = 12\n# \xff\xfe\n")
    err = cli_error(tmp_path, capsys, ["cdr", "--config", str(bad)])
    assert "is not UTF-8 text (byte 15" in err
    err = cli_error(tmp_path, capsys, ["cdr", "--config", str(tmp_path)])
    assert "is a directory" in err
    good = tmp_path / "good.toml"
    good.write_text("n_cells = 12\n")
    out = tmp_path / "ok.npy"
    assert main(["cdr", "--config", str(good), "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), CDRSolver(n_cells=12).solve(
        CDRSolver(n_cells=12).sample_parameters(np.random.default_rng(0))), rtol=1e-14)


SETTING_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(), st.text(max_size=4),
    st.lists(st.one_of(st.floats(), st.integers(-5, 5), st.text(max_size=2)), max_size=4),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@given(st.sampled_from(sorted(CDR_DEFAULTS)), SETTING_VALUES)
@settings(max_examples=300, deadline=None, derandomize=True)
def test_property_cdr_settings_validation(key, value):
    """Any value of any CDR setting is stored or refused with SolverSettingsError (the
    settings dataclass the constructor validates with, without building the mesh)."""
    try:
        config = CDRSettings.from_dict({**CDR_DEFAULTS, key: value})
        config.check_memory(n_ranks=1)
    except SolverSettingsError:
        return
    assert config.n_parameters == len(config.levels) >= 1
    assert CDRSettings.from_dict(config.to_dict()) == config   # normalised values are stable


@given(st.sampled_from(["n_cells", "domain", "body_center", "contrast", "anisotropy",
                        "receiver_start", "receiver_spacing", "n_receivers", "rtol",
                        "max_iterations", "factor_levels", "depth_range", "source_plus",
                        "allow_extrapolation", "preconditioner"]), SETTING_VALUES)
@settings(max_examples=120, deadline=None, derandomize=True)
def test_property_dcr_settings(key, value):
    """Any value of a DCR setting builds a solver or raises SolverSettingsError."""
    base = {"n_cells": (4, 4, 2), "domain": (2.0, 2.0, 1.0), "source_plus": (1.0, 1.5, 1.0),
            "source_minus": (1.0, 0.5, 1.0), "receiver_start": 0.5, "receiver_spacing": 0.5,
            "n_receivers": 3, "difference_step": 0.25}
    try:
        config = DCRSettings.from_dict({**base, key: value})
    except SolverSettingsError:
        with pytest.raises(SolverSettingsError):   # the solver refuses the same values
            DCRSolver(MPI.COMM_SELF, **{**base, key: value})
        return
    assert DCRSettings.from_dict(config.to_dict()) == config   # normalised values are stable
    solver = DCRSolver(MPI.COMM_SELF, **{**base, key: value})
    assert solver.n_observables == 2 * solver.n_receivers ** 2 == config.n_observables


def test_solver_exceptions_live_in_solvers_errors():
    """SolveError and SolverSettingsError come from solvers.errors (still importable from
    solvers.base) and keep their builtin bases, so ``except ValueError`` keeps working."""
    assert solvers.base.SolveError is SolveError is solvers.errors.SolveError
    assert solvers.base.SolverSettingsError is SolverSettingsError
    assert issubclass(SolverSettingsError, ValueError)
    assert issubclass(SolveError, RuntimeError)
    with pytest.raises(ValueError, match="unknown CDR setting"):
        CDRSettings.from_dict({"mesh_size": 3})


# ---------------------------------------------------------------------- output files
def test_out_through_symlink_writes_the_target(tmp_path):
    target_dir = tmp_path / "real"
    target_dir.mkdir()
    target = target_dir / "c.npy"
    target.write_bytes(b"old")
    link = tmp_path / "link.npy"
    link.symlink_to(target)
    np.save(tmp_path / "y.npy", np.array(Y_DCR))
    assert main(["dcr", "--params", str(tmp_path / "y.npy"), "--out", str(link),
                 *DCR_COARSE]) == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    c = np.load(target)
    np.testing.assert_allclose(c, DCRSolver(n_cells=(12, 12, 6)).solve(Y_DCR), rtol=1e-12)
    assert sorted(p.name for p in target_dir.iterdir()) == ["c.npy"]  # no temporary left


def test_out_fifo_and_device_are_refused(tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SystemExit) as exc:
        main(["dcr", "--seed", "1", "--out", str(fifo), *DCR_COARSE])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "is a FIFO; refusing to replace it" in err, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    link = tmp_path / "to-fifo.npy"
    link.symlink_to(fifo)
    with pytest.raises(SystemExit):
        main(["dcr", "--seed", "1", "--out", str(link), *DCR_COARSE])
    assert "(the target of the link" in capsys.readouterr().err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and link.is_symlink()
    try:
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        return  # creating device nodes needs privileges; the FIFO case covers the check
    with pytest.raises(SystemExit):
        main(["dcr", "--seed", "1", "--out", str(tmp_path / "null"), *DCR_COARSE])
    assert "is a device node" in capsys.readouterr().err
    assert stat.S_ISCHR(os.lstat(tmp_path / "null").st_mode)


def test_out_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert main(["dcr", "--seed", "1", "--out", str(tmp_path / "new" / "c.npy"),
                     "--plot", str(tmp_path / "p.png"), *DCR_COARSE]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new" / "c.npy").st_mode) == 0o640
    assert stat.S_IMODE(os.stat(tmp_path / "p.png").st_mode) == 0o640
    existing = tmp_path / "keep.npy"
    existing.write_bytes(b"")
    existing.chmod(0o604)
    assert main(["dcr", "--seed", "1", "--out", str(existing), *DCR_COARSE]) == 0
    assert stat.S_IMODE(os.stat(existing).st_mode) == 0o604


def test_failed_solve_leaves_no_output_folder(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dcr", "--seed", "1", "--out", str(tmp_path / "a" / "b" / "c.npy"),
              "--set", "max_iterations=2", *DCR_COARSE])
    assert exc.value.code == 1 and "solve failed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- Ctrl-C, MPI, sockets
def test_ctrl_c_gives_one_message(tmp_path):
    """SIGINT while solving: exit status 130, one line, no traceback and no PETSc banner."""
    proc = subprocess.Popen(
        [str(BIN / "solve-pde"), "cdr", "--set", "n_cells=16", "--set", "final_time=400",
         "--set", "output_times=[400.0]", "--out", str(tmp_path / "c.npy")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    time.sleep(6)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "solve-pde: interrupted (SIGINT); no output written\n", err
    assert not (tmp_path / "c.npy").exists()


def test_bad_input_under_mpi_is_reported_once():
    proc = subprocess.run(
        [str(BIN / "mpiexec"), "-n", "2", str(BIN / "solve-pde"), "cdr", "--set", "n_cells=0",
         "--out", "/nonexistent/c.npy"],
        capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("solve-pde: error: n_cells must be an integer >= 1") == 1, \
        proc.stderr
    assert "Traceback" not in proc.stderr


def test_single_node_detection():
    assert single_node({}) is True                                           # singleton
    assert single_node({"PMI_SIZE": "2", "MPI_LOCALNRANKS": "2", "PMI_RANK": "0"}) is True
    assert single_node({"PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}) is False  # 2 nodes
    assert single_node({"PMI_SIZE": "2", "MPI_UNIVERSE_SIZE": "-1"}) is True  # gforker
    assert single_node({"SLURM_STEP_ID": "0", "SLURM_STEP_NUM_NODES": "3"}) is False
    assert single_node({"PMIX_RANK": "0"}) is None                          # unknown
    env = {"UCX_NET_DEVICES": "mlx5_0:1"}
    assert configure_mpi_network(env) == {"FI_TCP_IFACE": "lo", "FI_SOCKETS_IFACE": "lo"}
    assert env["UCX_NET_DEVICES"] == "mlx5_0:1"                              # user wins
    assert configure_mpi_network({"VARPRO_MPI_LOOPBACK": "0"}) == {}
    assert configure_mpi_network({"PMI_SIZE": "4", "MPI_LOCALNRANKS": "2"}) == {}


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """(address, port) of the TCP sockets in state LISTEN that process ``pid`` holds."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6")]
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return set()
    found = set()
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                address, port = fields[1].split(":")
                found.add((address, int(port, 16)))
    return found


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


LOOPBACK = {"0100007F", "00000000000000000000000001000000"}


@pytest.mark.parametrize("launcher", ["none", "mpiexec"])
def test_mpi_listens_on_loopback_only(tmp_path, launcher):
    """While solve-pde runs (alone, or 2 ranks under Hydra's mpiexec), every TCP socket it
    listens on is bound to 127.0.0.1. Sockets inherited from mpiexec itself (its control
    port) are the launcher's and are left out."""
    cmd = [str(BIN / "solve-pde"), "cdr", "--set", "n_cells=16", "--set", "final_time=20",
           "--set", "output_times=[20.0]", "--out", str(tmp_path / "c.npy")]
    if launcher == "mpiexec":
        cmd = [str(BIN / "mpiexec"), "-n", "2", *cmd]
    if not Path("/proc/self/net/tcp").exists():
        pytest.skip("needs /proc/<pid>/net/tcp")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=clean_env())
    seen: set[tuple[str, int]] = set()
    launcher_socks: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 60
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            pids = [proc.pid] if launcher == "none" else [
                p for c in children(proc.pid) for p in [c, *children(c)]]
            for pid in pids:
                seen |= listening_sockets(pid)
            if launcher == "mpiexec":
                launcher_socks |= listening_sockets(proc.pid)
            if len(seen - launcher_socks) >= (1 if launcher == "none" else 2):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    seen -= launcher_socks
    assert seen, "no listening socket observed (the check would be vacuous)"
    assert {address for address, _ in seen} <= LOOPBACK, seen


def test_user_can_choose_the_interface():
    """VARPRO_MPI_LOOPBACK=0 restores the MPI library's default (all interfaces)."""
    code = ("import os; from solvers.common.mpi_network import configure_mpi_network as c; "
            "print(c(), os.environ.get('UCX_NET_DEVICES'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_env(VARPRO_MPI_LOOPBACK="0"), check=True).stdout
    assert out.strip() == "{} None"
