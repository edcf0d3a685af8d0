"""Tests of the ``solve-pde`` command (in-process calls of ``solvers.cli.main``)."""

import re

import dolfinx_solver  # noqa: F401
import numpy as np
import pytest
from mpi4py import MPI

from solvers.cdr import CDRSolver
from solvers.cli import main, parse_set_options, read_parameters

CDR_COARSE = ["--set", "n_cells=12"]
DCR_COARSE = ["--set", "n_cells=[12, 12, 6]"]


def test_cdr_params_file_to_observables_and_figure(tmp_path):
    y = np.random.default_rng(4).random(55)
    y /= y.sum()
    np.savetxt(tmp_path / "y.txt", y)
    out, fig, fields = tmp_path / "c.npy", tmp_path / "u.png", tmp_path / "u.npz"
    assert main(["cdr", "--params", str(tmp_path / "y.txt"), "--out", str(out), "--plot",
                 str(fig), "--fields", str(fields), *CDR_COARSE]) == 0
    c = np.load(out)
    expected = CDRSolver(MPI.COMM_SELF, n_cells=12).solve(y)
    assert c.shape == (72,)
    np.testing.assert_allclose(c, expected, rtol=1e-14)
    assert fig.stat().st_size > 10_000  # a real PNG, not an empty file
    saved = np.load(fields)
    assert saved["u"].shape == (12, 13 * 13) and saved["x"].shape == (13 * 13, 2)
    np.testing.assert_allclose(saved["t"], np.round(0.39 + 0.01 * np.arange(12), 10))


def test_seed_draws_from_the_spec_distribution(tmp_path):
    out = tmp_path / "c.npy"
    assert main(["cdr", "--seed", "7", "--out", str(out), *CDR_COARSE]) == 0
    solver = CDRSolver(MPI.COMM_SELF, n_cells=12)
    y = solver.sample_parameters(np.random.default_rng(7))
    np.testing.assert_allclose(np.load(out), solver.solve(y), rtol=1e-14)


def test_dcr_npy_params(tmp_path):
    np.save(tmp_path / "y.npy", np.array([0.5, 0.2, 1.0]))
    out = tmp_path / "c.npy"
    assert main(["dcr", "--params", str(tmp_path / "y.npy"), "--out", str(out),
                 *DCR_COARSE]) == 0
    c = np.load(out)
    assert c.shape == (882,) and np.all(np.isfinite(c)) and np.abs(c).max() > 0


@pytest.mark.parametrize("argv, message", [
    (["cdr", "--params", "missing.npy"], "parameter file 'missing.npy' does not exist"),
    (["cdr", "--set", "n_cells=0"], "n_cells must be an integer >= 1"),
    (["cdr", "--set", "nonsense=1"], "unknown CDR setting"),
    (["cdr", "--set", "n_cells"], "--set expects key=value"),
    (["dcr", "--params", "{yfile}"], r"shape \(3,\)"),
    (["dcr", "--seed", "1", "--set", "n_cells=[12, 11, 6]"], "n_cells"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, argv, message):
    yfile = tmp_path / "y.txt"
    yfile.write_text("1\n2\n")
    argv = [a.format(yfile=yfile) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--out", str(tmp_path / "c.npy")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("solve-pde: error:") and "Traceback" not in err
    assert re.search(message, err), err
    assert not (tmp_path / "c.npy").exists()


def test_parameter_file_formats(tmp_path):
    (tmp_path / "a.txt").write_text("0.5\n0.25\n0.25\n")
    np.testing.assert_array_equal(read_parameters(str(tmp_path / "a.txt")), [0.5, 0.25, 0.25])
    (tmp_path / "b.txt").write_text("0.5\nabc\n")
    with pytest.raises(Exception, match="cannot read parameters"):
        read_parameters(str(tmp_path / "b.txt"))
    assert parse_set_options(["n_cells=[1, 2]", "linear_solver=lu", "dt=0.005"]) == {
        "n_cells": [1, 2], "linear_solver": "lu", "dt": 0.005}
