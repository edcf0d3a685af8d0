"""The Bayesian-inversion example end to end on its tiny configuration (real PDE, real
training, real MCMC)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def load_example():
    spec = importlib.util.spec_from_file_location(
        "dcr_bayesian_inversion", ROOT / "examples" / "dcr_bayesian_inversion.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_end_to_end_on_the_tiny_configuration(tmp_path, capsys):
    example = load_example()
    out = tmp_path / "inv"
    assert example.main(["--tiny", "--out", str(out), "--steps", "30", "--burn", "10",
                         "--da-steps", "40"]) == 0
    printed = capsys.readouterr().out
    assert "plain / corrected DA" in printed and "offset from 3 PDE solves" in printed
    r = json.loads((out / "results.json").read_text())
    assert (out / r["figure"]).stat().st_size > 20_000               # a real corner plot
    e, da = r["emcee"], r["delayed_acceptance"]
    # same walkers/steps for both fidelities; the PDE chain solved once per proposal
    assert e["pde"]["solves"] == 8 * 30 + 8
    lo, hi = np.array(r["training_box"])
    for key in ("surrogate", "pde"):
        assert np.all((np.array(e[key]["mean"]) > lo) & (np.array(e[key]["mean"]) < hi))
        assert np.all(np.array(e[key]["std"]) > 0)
    # plain Metropolis solves the PDE for every in-box proposal; DA only after stage 1
    assert da["plain"]["pde_solves"] <= 41
    assert da["da"]["pde_solves"] <= da["plain"]["pde_solves"]
    assert da["da"]["accepted"] <= da["da"]["pde_solves"]
    assert da["da_corrected"]["pde_solves"] <= da["plain"]["pde_solves"]
    # the Laplace covariance is the Gauss-Newton one at the reported MAP
    import surrogate
    from surrogate.serving import GaussianPosterior

    m = surrogate.load(out / "model")
    post = GaussianPosterior(m, np.zeros(882), r["sigma"], m.lower, m.upper)
    np.testing.assert_allclose(np.sqrt(np.diag(post.gauss_newton_covariance(r["map"]))),
                               r["laplace_std"], rtol=1e-8)


def test_metropolis_and_delayed_acceptance_sample_a_known_gaussian():
    """With a linear model both samplers must reproduce the exact Gaussian posterior; DA with
    a perturbed coarse model still targets the fine posterior (the second stage corrects)."""
    example = load_example()
    from surrogate.serving import GaussianPosterior

    class Linear:
        n_in, n_out = 2, 3

        def __init__(self, A):
            self.A = np.asarray(A, dtype=float)

        def __call__(self, y):
            return np.asarray(y) @ self.A.T

    A = np.array([[1.0, 0.2], [0.3, 1.0], [0.5, -0.4]])
    fine = GaussianPosterior(Linear(A), [0.1, 0.2, 0.0], 0.1, [-5, -5], [5, 5])
    coarse = GaussianPosterior(Linear(A * 1.05), [0.1, 0.2, 0.0], 0.1, [-5, -5], [5, 5])
    cov = np.linalg.inv(A.T @ A / 0.01)
    mean = cov @ (A.T @ np.array([0.1, 0.2, 0.0]) / 0.01)
    for post_c, correct in ((None, False), (coarse, False), (coarse, True)):
        chain, n_fine, acc = example.metropolis(fine, post_c, mean, cov, 6000, seed=3,
                                                correct=correct)
        x = chain[1000:]
        assert np.all(np.abs(x.mean(axis=0) - mean) < 0.15 * np.sqrt(np.diag(cov)))
        np.testing.assert_allclose(x.std(axis=0), np.sqrt(np.diag(cov)), rtol=0.08)
        assert example.ess(x) > 200
        assert n_fine <= 6001 and acc < n_fine
