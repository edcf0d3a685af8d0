"""The diffusion KL example (examples/diffusion_kl.py), used as a plugin: its KL eigenpairs,
its coefficient, mesh convergence of the observables, and 1 vs 2 ranks."""

from __future__ import annotations

import math
from pathlib import Path

import dolfinx_solver  # noqa: F401  (before mpi4py)
import numpy as np
import pytest
from mpi4py import MPI
from scipy.integrate import quad

from solvers.errors import SolverSettingsError
from solvers.plugins import (
    DEFAULT_SPLIT,
    PluginError,
    check_deterministic_sampler,
    check_output,
    resolve_problem,
)

ROOT = Path(__file__).resolve().parents[2]
SPEC = "examples/diffusion_kl.py:DiffusionKL"

#: u(1/2, 1/2) of -laplace(u) = 1 on the unit square, u = 0 on the boundary (series solution)
POISSON_CENTRE = 0.07367135328


@pytest.fixture
def problem(monkeypatch):
    monkeypatch.chdir(ROOT)  # the spec is relative to the working directory
    return resolve_problem(SPEC)


@pytest.fixture
def module(problem):
    import sys

    return sys.modules[problem.cls.__module__]


def test_it_resolves_as_a_file_plugin_and_describes_itself(problem):
    assert problem.identity.kind == "file" and problem.name == "diffusion_kl"
    assert problem.help.startswith("Diffusion with a log-normal KL coefficient")
    solver = problem.build(n_cells=6)
    info = problem.describe(solver)
    assert (info.n_parameters, info.n_observables) == (12, 25)
    assert info.parameter_names == tuple(f"xi{k}" for k in range(1, 13))
    assert info.parameter_box is None and info.split_fractions == DEFAULT_SPLIT
    np.testing.assert_allclose(info.observable_coords["x1"][:5], np.arange(1, 6) / 6)
    np.testing.assert_allclose(info.observable_coords["x2"][::5], np.arange(1, 6) / 6)
    assert info.settings["n_cells"] == 6 and problem.cls(MPI.COMM_SELF, **info.settings)
    y = check_deterministic_sampler(solver, 3, 4, label=info.label)
    np.testing.assert_array_equal(y, np.random.default_rng([3, 4]).standard_normal(12))
    c = check_output(info, solver.solve(y, sample=4), 4)
    assert c.shape == (25,) and np.all(c > 0)


def test_one_dimensional_eigenpairs_solve_the_integral_equation(module):
    length = 0.3
    modes = module.exponential_modes_1d(length, 8)
    eigenvalues = [m[0] for m in modes]
    assert eigenvalues == sorted(eigenvalues, reverse=True)
    assert [m[2] for m in modes] == ["even", "odd"] * 4  # interlaced
    assert sum(eigenvalues) < 1.0  # the trace of the unit-variance kernel on [0, 1]
    for lam, w, parity in modes:
        def phi(t, w=w, parity=parity):
            return module._phi_1d(t - 0.5, w, parity)

        assert quad(lambda t: phi(t) ** 2, 0, 1, limit=200)[0] == pytest.approx(1, abs=1e-10)
        for s in (0.07, 0.5, 0.81):
            def integrand(t, s=s):
                return math.exp(-abs(s - t) / length) * phi(t)
            lhs = quad(integrand, 0, s, limit=200)[0] + quad(integrand, s, 1, limit=200)[0]
            assert lhs == pytest.approx(lam * phi(s), abs=1e-10)
    one, two = modes[0], modes[1]
    assert quad(lambda t: module._phi_1d(t - 0.5, one[1], one[2])
                * module._phi_1d(t - 0.5, two[1], two[2]), 0, 1)[0] == pytest.approx(0, abs=1e-12)


def test_two_dimensional_modes_are_the_largest_products(module):
    modes = module.kl_modes(12, 0.5, 2.0)
    one_d = module.exponential_modes_1d(0.5, 12)
    products = sorted((4.0 * a[0] * b[0] for a in one_d for b in one_d), reverse=True)
    np.testing.assert_allclose([m[0] for m in modes], products[:12], rtol=1e-14)
    assert sum(m[0] for m in modes) < 4.0  # below sigma^2 (truncation)


def test_the_ufl_coefficient_is_the_kl_expansion(problem):
    from dolfinx import fem

    solver = problem.build(n_cells=8, n_kl=6)
    y = np.random.default_rng(1).standard_normal(6)
    solver.y.value[:] = y
    msh = solver.mesh
    cells = np.arange(msh.topology.index_map(2).size_local, dtype=np.int32)
    values = fem.Expression(solver.kappa, np.array([[1 / 3, 1 / 3]])).eval(msh, cells).ravel()
    centres = msh.geometry.x[msh.geometry.dofmaps[0][cells]].mean(axis=1)[:, :2]
    np.testing.assert_allclose(values, solver.log_conductivity(centres, y), atol=1e-12)


def test_constant_coefficient_gives_the_poisson_solution(problem):
    solver = problem.build(n_cells=48)
    c = solver.solve(np.zeros(12))
    assert c[12] == pytest.approx(POISSON_CENTRE, rel=5e-4)  # the centre point
    np.testing.assert_allclose(c.reshape(5, 5), c.reshape(5, 5).T, rtol=1e-12)  # symmetry


def test_point_values_converge_at_second_order_under_refinement(problem):
    y = np.random.default_rng([0, 1]).standard_normal(12)
    reference = problem.build(n_cells=192).solve(y)
    errors = [np.max(np.abs(problem.build(n_cells=n).solve(y) - reference))
              for n in (12, 24, 48)]
    rates = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((rates > 1.8) & (rates < 2.4)), (errors, rates)
    assert errors[-1] < 2e-3 * np.max(np.abs(reference))


def test_lu_and_cg_agree(problem):
    y = np.random.default_rng(7).standard_normal(12)
    lu = problem.build(n_cells=24).solve(y)
    cg = problem.build(n_cells=24, linear_solver="cg").solve(y)
    np.testing.assert_allclose(cg, lu, rtol=1e-10)


@pytest.mark.parametrize("settings, message", [
    ({"n_cells": 0}, r"n_cells must be an integer in \[1, 4096\], got 0"),
    ({"n_kl": 2.5}, "n_kl must be an integer"),
    ({"correlation_length": -1}, "correlation_length must be a finite number > 0"),
    ({"linear_solver": "gmres"}, r"linear_solver must be one of \['cg', 'lu'\]"),
])
def test_bad_settings_are_refused_naming_the_plugin(problem, module, settings, message):
    with pytest.raises(SolverSettingsError, match=message):
        module.DiffusionKL(MPI.COMM_SELF, **settings)
    with pytest.raises(PluginError, match=f"plugin '{SPEC}'.*invalid settings.*{message}"):
        problem.build(**settings)


@pytest.mark.mpi
def test_two_ranks_give_the_one_rank_observables_on_every_rank(monkeypatch):
    monkeypatch.chdir(ROOT)
    problem = resolve_problem(SPEC)
    comm = MPI.COMM_WORLD
    y = np.random.default_rng([2, 5]).standard_normal(12)
    distributed = problem.build(comm, n_cells=24)
    assert distributed.mesh.topology.index_map(2).size_local < 2 * 24 * 24  # really split
    c = distributed.solve(y)
    assert all(np.array_equal(c, other) for other in comm.allgather(c))
    serial = problem.build(MPI.COMM_SELF, n_cells=24).solve(y)
    np.testing.assert_allclose(c, serial, rtol=1e-12)
