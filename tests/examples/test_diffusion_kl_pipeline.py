"""The KL example end to end on a coarse mesh, as docs/own-model.md walks through it:
``generate-dataset examples/diffusion_kl.py:DiffusionKL`` (2 ranks), ``train-surrogate``,
``evaluate-surrogate`` with fresh solves through the plugin, and the Python API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.datasets.cli_helpers import clean_env, command

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SPEC = "examples/diffusion_kl.py:DiffusionKL"
COARSE = ["--set", "n_cells=12", "--set", "n_kl=8"]
TINY = "[model]\nwidth = 8\nlevels = [2, 4]\n[gnvpro]\nwork_units_per_level = 40\n"


def env() -> dict[str, str]:
    e = clean_env()
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    return e


def run(cmd: list, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in cmd], capture_output=True, text=True, cwd=cwd,
                          env=env(), timeout=300)


@pytest.mark.filterwarnings("ignore::surrogate.OutOfBoxWarning")
def test_kl_example_end_to_end(tmp_path) -> None:
    import dolfinx_solver  # noqa: F401  (before mpi4py)
    from mpi4py import MPI

    from datasets import open_dataset
    from solvers.plugins import resolve_problem
    from surrogate import load
    from surrogate.serving import PDEModel

    data, model, report = tmp_path / "kl.h5", tmp_path / "model", tmp_path / "report"
    proc = run(command([SPEC, *COARSE, "--samples", "80", "--seed", "1", "--out", data,
                        "--no-progress"], 2))
    assert proc.returncode == 0, proc.stderr
    assert "diffusion_kl -> " in proc.stdout and "80 ok, 0 failed" in proc.stdout
    (tmp_path / "tiny.toml").write_text(TINY)
    proc = run([BIN / "train-surrogate", "--data", data, "--method", "gnvpro", "--config",
                tmp_path / "tiny.toml", "--out", model, "--quiet", "--threads", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    proc = run([sys.executable, "-m", "surrogate.evaluation.cli", model, "--samples", "12",
                "--seed", "2", "--out", report, "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "model (diffusion_kl) on 12 fresh samples" in proc.stdout

    # fresh solves: the plugin's own solves of its own draws (a fresh class, built directly)
    cls = resolve_problem(str(ROOT / SPEC)).cls
    kl = cls(MPI.COMM_SELF, n_cells=12, n_kl=8)
    fresh = open_dataset(report / "fresh.h5")
    y = np.array([kl.sample_parameters(np.random.default_rng([2, i])) for i in range(12)])
    np.testing.assert_array_equal(fresh["y"].values, y)
    c = np.array([kl.solve(row) for row in y])
    np.testing.assert_allclose(fresh["c"].values, c, rtol=1e-12, atol=0)
    # the report's errors are those of the surrogate on them
    sur = load(model)
    err = np.linalg.norm(sur.predict(y) - c, axis=1) / np.linalg.norm(c, axis=1)
    numbers = json.loads((report / "report.json").read_text())
    np.testing.assert_allclose(numbers["per_sample"]["error"], err, rtol=1e-10)
    assert numbers["fresh"]["mean"] < 0.5
    assert open_dataset(data).attrs["problem"] == "diffusion_kl"
    # the Python API: the PDE the surrogate was trained for, as a model with its call shape
    pde = PDEModel.from_surrogate_metadata(sur.metadata)
    np.testing.assert_allclose(pde(y[:2]), c[:2], rtol=1e-12, atol=0)
    assert pde.input_names == [f"xi{k}" for k in range(1, 9)] and np.all(pde.lower == -np.inf)
