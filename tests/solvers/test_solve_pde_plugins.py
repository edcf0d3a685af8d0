"""``solve-pde`` with a problem plugin in a temporary file (in-process calls of main)."""

from __future__ import annotations

import numpy as np
import pytest

from solvers.cli import main
from tests.plugin_sources import write_plugin


@pytest.fixture
def folder(tmp_path, monkeypatch):
    write_plugin(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def direct(y: np.ndarray, n_points: int = 12) -> np.ndarray:
    centre, width, height = y
    return height * np.exp(-((np.linspace(0, 1, n_points) - centre) / width) ** 2)


def test_a_plugin_solves_from_a_seed_and_a_parameter_file(folder, capsys) -> None:
    assert main(["bump.py:Bump", "--seed", "4", "--out", "c.npy", "--set", "n_points=9"]) == 0
    y = np.random.default_rng(4).uniform([0.3, 0.3, 0.5], [0.7, 0.6, 1.5])
    np.testing.assert_array_equal(np.load(folder / "c.npy"), direct(y, 9))
    np.savetxt(folder / "y.txt", [0.5, 0.4, 1.0])
    assert main(["bump.py:Bump", "--params", "y.txt", "--out", "d.npy"]) == 0
    np.testing.assert_array_equal(np.load(folder / "d.npy"), direct(np.array([0.5, 0.4, 1.0])))
    assert "wrote 12 observables to d.npy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--seed", "1", "--plot", "p.png"], "--plot: problem 'bump' (plugin 'bump.py:Bump') cannot "
                                         "write it (no solve_and_plot method)"),
    (["--seed", "1", "--set", "colour=1"], "problem 'bump' (plugin 'bump.py:Bump'): unknown "
                                           "setting(s) ['colour']"),
    (["--params", "short.txt"], "y must have shape (3,), got shape (2,)"),
    (["--seed", "1", "--fields", "f.npz"], "--fields: problem 'bump' (plugin 'bump.py:Bump') "
                                           "cannot write it"),
])
def test_bad_input_to_a_plugin_is_one_line(folder, capsys, argv, message) -> None:
    (folder / "short.txt").write_text("0.5\n0.4\n")
    with pytest.raises(SystemExit) as exc:
        main(["bump.py:Bump", "--out", "c.npy", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("solve-pde: error: ") and message in err, err
    assert not (folder / "c.npy").exists()


def test_a_raising_solve_is_a_failed_solve(folder, capsys) -> None:
    text = (folder / "bump.py").read_text().replace(
        'if sample != self.bad_sample or self.mode == "ok":', 'if self.mode == "ok":')
    (folder / "bump.py").write_text(text)  # solve-pde solves sample None: raise anyway
    with pytest.raises(SystemExit) as exc:
        main(["bump.py:Bump", "--seed", "1", "--out", "c.npy", "--set", 'mode="raise"'])
    assert exc.value.code == 1
    err = capsys.readouterr().err
    assert err.strip() == ("solve-pde: solve failed: problem 'bump' (plugin 'bump.py:Bump'): "
                           "solve() raised ZeroDivisionError: division by zero")
    assert not (folder / "c.npy").exists()


def test_help_lists_the_problems(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for part in ("problems:", "cdr", "convection-diffusion-reaction", "dcr",
                 "DC resistivity", "umbridge", "FILE.py:CLASS"):
        assert part in out
